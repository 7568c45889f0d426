"""`keras-mtl serve MODEL_BASE`: write TF Serving's configs and start (or print how to start) the server."""

from keras_mtl.serving import serve

HELP = "write TF Serving configs and start (or print how to start) the server"


def add_arguments(parser):
    parser.add_argument("model_base", help="the export's model base dir (saved_models/<name>)")
    parser.add_argument("--port", type=int, default=8500, help="gRPC port (default 8500)")
    parser.add_argument("--rest-port", type=int, default=8501, help="REST port (default 8501)")
    parser.add_argument("--dry-run", action="store_true", help="write the config files and print the commands; do not start")
    parser.add_argument("--config-dir", metavar="DIR",
                        help="write models.config, batching.config, monitoring.config here (default: the model base; "
                             "for a read-only export)")


def run(args):
    return serve(args.model_base, port=args.port, rest_port=args.rest_port, dry_run=args.dry_run,
                 out_dir=args.config_dir)
