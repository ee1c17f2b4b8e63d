"""``keras-segattn visualize --model M.keras --image IMG --pixel Y X --output out.png``"""


def add_arguments(parser):
    parser.add_argument("--model", required=True, help="a .keras model file")
    parser.add_argument("--image", required=True, help="the input image")
    parser.add_argument("--pixel", nargs=2, type=int, metavar=("Y", "X"), default=None,
                        help="query pixel in image coordinates (default: the centre)")
    parser.add_argument("--output", required=True, help="output PNG")
    parser.add_argument("--layers", nargs="+", default=None,
                        help="names of the attention layers to show (default: all)")
    parser.add_argument("--size", nargs=2, type=int, metavar=("H", "W"), default=None,
                        help="resize the image first (attention maps are O((HW)^2) memory)")


def run(args):
    import keras
    import numpy as np

    import keras_segattn.models  # noqa: F401  (registers the model classes)
    from keras_segattn import validation
    from keras_segattn.inference import load_image
    from keras_segattn.visualize import plot_attention

    validation.check_keras_file(args.model)
    image = load_image(args.image)
    if args.size:
        from PIL import Image

        image = np.asarray(Image.fromarray(image).resize((args.size[1], args.size[0]),
                                                         Image.BILINEAR))
    model = keras.saving.load_model(args.model, compile=False)
    plot_attention(model, image, pixel=args.pixel, output=args.output, layers=args.layers)
    print(f"wrote {args.output}")
    return 0
