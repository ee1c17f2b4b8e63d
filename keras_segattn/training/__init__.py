"""keras_segattn.training"""
