"""Console script `hasmb-operator`."""

import sys

from hasmb.cli._stub import not_implemented


def main(argv: list[str] | None = None) -> int:
    return not_implemented("hasmb-operator", "the operator issue")


if __name__ == "__main__":
    sys.exit(main())
