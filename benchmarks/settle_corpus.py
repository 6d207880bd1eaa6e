"""Make a corpus folder consistent after its MD processes were killed: cut every replica XTC back
to the bytes its progress record vouches for, refresh each protein's metadata and the index.

    python benchmarks/settle_corpus.py corpus/md
"""

import sys
from pathlib import Path

from starmd.simulate import atlas
from starmd.simulate.corpus import load_manifest, write_corpus_index

root = Path(sys.argv[1] if len(sys.argv) > 1 else "corpus/md")
entries = load_manifest()
for entry in entries:
    folder = root / entry.name
    for replica in (1, 2):
        record = atlas.read_json(atlas.replica_progress_json(folder, entry.name, replica))
        if record is not None:
            atlas.truncate_to(atlas.replica_xtc(folder, entry.name, replica), record["xtc_bytes"])
    if atlas.read_json(atlas.setup_json(folder, entry.name)) is not None:
        atlas.write_metadata(folder, entry.name)
print(write_corpus_index(root, entries).read_text())
