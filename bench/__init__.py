"""pypid's benchmark: the library is bench.lib; run.py, compare.py, corpus.py run it."""
