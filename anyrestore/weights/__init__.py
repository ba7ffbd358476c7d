"""Checkpoints: the only code that touches safetensors files and the Hugging Face Hub.

``load_weights(ref)`` turns a reference into a loaded model with what is known about it
(``LoadedWeights``): None (the embedded default), a path to a ``.safetensors`` file, a manifest
entry name, or a registry model name (its preferred entry). See docs/weights.md.
"""

from anyrestore.weights.authoring import add_entry, embed_file, manifest_entry_for
from anyrestore.weights.checkpoint import (
    checkpoint_config,
    load_checkpoint,
    read_metadata,
    save_checkpoint,
)
from anyrestore.weights.convert import convert_state_dict, read_state_dict
from anyrestore.weights.hub import cache_dir, cached_file
from anyrestore.weights.manifest import (
    WeightsEntry,
    default_entry,
    entries_for_model,
    find_entry,
    left_out_of_wheel,
    list_entries,
    manifest_path,
    wheel_weights,
)
from anyrestore.weights.resolve import (
    FileCheck,
    LoadedWeights,
    entry_for,
    load_weights,
    resolve_weights,
    sha256_file,
    verify_entries,
    weights_key,
)

__all__ = [
    "FileCheck",
    "LoadedWeights",
    "WeightsEntry",
    "add_entry",
    "cache_dir",
    "cached_file",
    "checkpoint_config",
    "convert_state_dict",
    "default_entry",
    "embed_file",
    "entries_for_model",
    "entry_for",
    "find_entry",
    "left_out_of_wheel",
    "list_entries",
    "load_checkpoint",
    "load_weights",
    "manifest_entry_for",
    "manifest_path",
    "read_metadata",
    "read_state_dict",
    "resolve_weights",
    "save_checkpoint",
    "sha256_file",
    "verify_entries",
    "weights_key",
    "wheel_weights",
]
