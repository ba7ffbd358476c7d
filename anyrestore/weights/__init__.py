"""Checkpoints: the only code that touches safetensors files and the Hugging Face Hub."""

from anyrestore.weights.checkpoint import load_checkpoint, read_metadata, save_checkpoint

__all__ = ["load_checkpoint", "read_metadata", "save_checkpoint"]
