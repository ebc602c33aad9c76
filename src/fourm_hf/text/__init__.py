"""Text: the 4M WordPiece tokenizer, its id layout, boxes <-> text and the 4M-21 text serialisations."""
