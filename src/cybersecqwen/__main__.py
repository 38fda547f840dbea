from cybersecqwen.cli import main

main()
