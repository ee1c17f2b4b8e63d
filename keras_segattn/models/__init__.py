"""keras_segattn.models"""
