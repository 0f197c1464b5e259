"""Time the full blog table (16 rows, FP32 and AMP) and print the figure.

    python benchmarks/bench_table.py [jobs=2] [iterations=2] [method=breakdown]

Target (issue #3): under 60 s on a 2-core machine.
"""

from __future__ import annotations

import sys
import time
import warnings


def main(argv: list[str]) -> int:
    from yolomem.cli.table import parse_table_words, rows_for
    from yolomem.render.table_formats import to_markdown
    from yolomem.sweeps.table import compute_table

    warnings.filterwarnings("ignore")
    options = parse_table_words(argv)
    started = time.perf_counter()
    table = compute_table(rows_for(options), options.gpus, method=options.method, iterations=options.iterations,
                          jobs=options.jobs)  # fmt: skip
    seconds = time.perf_counter() - started
    print(to_markdown(table))
    print(f"bench_table: {len(table.rows)} rows x 2 precisions in {seconds:.1f} s "
          f"(jobs={options.jobs}, iterations={options.iterations}, method={options.method}; target < 60 s)")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
