"""`python -m mtl check <manifest>`: validate a manifest (files, labels, kinds, splits, groups) and print its
summary, or one line per problem. Needs no torch."""

from __future__ import annotations

import sys


def main(args) -> int:
    from mtl.data.manifest import format_problems, read_manifest, summary, validate
    m, problems = read_manifest(args.manifest)
    if m is not None:
        problems += validate(m, check_images=not args.no_images)
        for w in m.warnings:
            print(w, file=sys.stderr)
    if problems:
        print(format_problems(problems), file=sys.stderr)
        print(f"{args.manifest}: {len(problems)} problem(s)", file=sys.stderr)
        return 1
    print(summary(m))
    return 0
