"""babyllama: pretrain a small Chinese Llama2 on MindSpore, from corpora to checkpoints."""

__version__ = "0.1.0"
