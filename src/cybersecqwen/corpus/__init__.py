"""The SFT corpus: source parsers, example builders and decontamination against CTI-Bench."""
