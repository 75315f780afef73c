"""Count the words on every line of a text, in parallel worker processes.

As a script, on a generated text (or on FILE if given)::

    python examples/word_lengths.py [FILE]

As a target of the command line, one JSON result per line of FILE, in order::

    conveyor run examples/word_lengths.py:count_words FILE
"""

import random
import sys
import time

import conveyor

WORDS = "the quick brown fox jumps over a lazy dog while many workers share the load".split()


def count_words(line: str) -> int:
    """The number of whitespace-separated words in one line."""
    return len(line.split())


def make_text(lines: int, seed: int = 0) -> list[str]:
    """A reproducible text of ``lines`` lines of 0 to 30 random words."""
    rng = random.Random(seed)
    return [" ".join(rng.choices(WORDS, k=rng.randint(0, 30))) for _ in range(lines)]


def main() -> None:
    if len(sys.argv) > 1:
        with open(sys.argv[1], encoding="utf-8") as file:
            text = file.read().splitlines()
    else:
        text = make_text(50_000)
    start = time.perf_counter()
    with conveyor.Pool(backend="process") as pool:  # one worker per usable core
        counts = pool.map(count_words, text)  # results in input order
        workers = pool.workers
    seconds = time.perf_counter() - start
    print(f"{len(counts)} lines, {sum(counts)} words, longest line: {max(counts, default=0)} words")
    print(f"{workers} worker processes, {seconds:.2f} s")


if __name__ == "__main__":  # required: worker processes may import this file; they must not run main()
    main()
