"""``safetyheads datasets``: the bundled prompt sets."""

from __future__ import annotations

from tabulate import tabulate

from .. import data


def register(sub) -> None:
    p = sub.add_parser("datasets", help="list the bundled prompt sets (any .csv/.jsonl file or Hub dataset id works too)")
    p.set_defaults(func=cmd_datasets)


def cmd_datasets(args) -> int:
    print(tabulate(data.list_datasets(), headers="keys", tablefmt="github"))
    print("\nalso accepted by --data: a .csv/.jsonl/.json file (pick the column with --column), "
          "or a Hub dataset id in the local Hugging Face cache")
    return 0
