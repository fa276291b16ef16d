"""The end-to-end demo (`make demo`) and its streaming part."""
