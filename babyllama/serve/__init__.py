"""`babyllama serve`: the JSON-line server (`stdio`) and the OpenAI-compatible HTTP server
(`http_server`, `openai_api`) over what they share (`engine`); the command in `command`."""

from babyllama.serve.stdio import PROTOCOL_VERSION

__all__ = ["PROTOCOL_VERSION"]
