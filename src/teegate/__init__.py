"""teegate: an OpenAI-compatible gateway for confidential LLM inference."""

from teegate.allocator import pin_mmap_threshold

# First thing in every process that runs teegate, before its imports grow the heap
# (allocator.py says why: ~25 KiB of resident memory per open stream).
pin_mmap_threshold()
