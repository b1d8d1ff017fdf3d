"""blogmirror: mirror a blog's articles and comments into Discord threads."""

__version__ = "0.1.0"
