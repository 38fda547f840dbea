"""cybersecqwen: build, measure and run small specialist models for cyber threat intelligence."""

__version__ = "0.1.0"
