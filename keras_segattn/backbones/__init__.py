"""keras_segattn.backbones"""
