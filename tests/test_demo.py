import io
import subprocess
import sys

from lash_core.demo import run_tour


async def test_tour_shows_replay_then_gap_and_passes():
    out = io.StringIO()
    assert await run_tour(out, delay=0)
    text = out.getvalue()
    assert "alice: reconnect -> REPLAYED 1 missed events" in text
    assert "bob: reconnect -> GAP (trimmed)" in text
    assert "requested cursor : lashsc1:1:12:tour" in text
    assert "reconstructed view equals the server's: yes" in text
    assert text.rstrip().endswith("tour passed")


def test_module_entry_point_exits_zero():
    proc = subprocess.run(
        [sys.executable, "-m", "lash_core.demo"], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    assert "turn_activity/assistant_prose_delta" in proc.stdout
