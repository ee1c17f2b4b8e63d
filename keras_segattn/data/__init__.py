"""keras_segattn.data"""
