"""The ``fourm-hf`` subcommands, one module each (the top layer of the package).

Every module defines ``add_arguments(parser)`` and ``main(args) -> int`` and does only the command-line
part: it reads the arguments, calls library functions, prints, and turns the library's ``ValueError`` /
``TypeError`` into an error message and exit status 2. ``fourm_hf.cli`` imports a module only when its
subcommand runs, so ``fourm-hf --help`` stays fast. Library modules define no ``main()``.
"""
