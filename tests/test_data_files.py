"""Code versions of local data files (salmon_dag.lineage.DataFiles): an optional file missing on
this machine counts as the artifact recorded it; any other difference counts as it is."""

from salmon_dag.lineage import DataFiles, files_hash


def files(required, optional) -> DataFiles:
    return DataFiles(tuple(required), tuple(optional), files_hash([*required, *optional]))


def test_a_missing_optional_file_counts_as_the_artifact_was_built_with_it(tmp_path):
    rules, pairs = tmp_path / "rules.txt", tmp_path / "pairs.jsonl"
    rules.write_text("r1")
    pairs.write_text("p1")
    built = files([rules], [pairs])
    record = built.record()
    assert built.version(record) == built.hash

    pairs.unlink()
    here = files([rules], [pairs])
    assert here.hash != built.hash and here.version(record) == built.hash  # absent here: as built
    assert here.version(None) == here.hash  # nothing recorded (an older artifact): as it is

    rules.write_text("r2")  # a present file changed: as it is
    assert files([rules], [pairs]).version(record) == files([rules], [pairs]).hash

    rules.write_text("r1")
    pairs.write_text("p2")  # back, edited: as it is
    assert files([rules], [pairs]).version(record) != built.hash


def test_an_artifact_built_without_the_optional_file_goes_stale_when_it_appears(tmp_path):
    pairs = tmp_path / "pairs.jsonl"
    without = files([], [pairs])
    record = without.record()
    assert record["files"] == {"pairs.jsonl": None}
    pairs.write_text("p1")
    assert files([], [pairs]).version(record) != without.hash
