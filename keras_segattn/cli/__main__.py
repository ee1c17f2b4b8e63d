from keras_segattn.cli import console_main

console_main()
