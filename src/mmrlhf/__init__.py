"""mmrlhf: align vision-language models with human and AI preference feedback."""

__version__ = "0.1.0"
