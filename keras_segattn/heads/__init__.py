"""keras_segattn.heads"""
