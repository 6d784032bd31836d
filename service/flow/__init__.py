"""What a request goes through once parsed: admission, decoding, the model, errors and their answers."""
