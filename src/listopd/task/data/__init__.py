"""Task files from data: the Amazon Reviews 2023 loader and the embedded synthetic shop."""
