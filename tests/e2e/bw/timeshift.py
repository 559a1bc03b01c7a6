"""Move the broker's wall clock (time()) forward while it runs: an LD_PRELOAD shim built from
timeshift.c. libfaketime cannot be used: it recurses with jemalloc at start-up."""
import os
import subprocess
from pathlib import Path

SOURCE = Path(__file__).with_name("timeshift.c")


class TimeShift:
    """env() for the broker; set(seconds) moves its time() that far ahead of the real clock."""

    def __init__(self, workdir):
        workdir = Path(workdir)
        self.lib = workdir / "timeshift.so"
        self.file = workdir / "timeshift"
        subprocess.run(["cc", "-shared", "-fPIC", "-O2", "-o", str(self.lib), str(SOURCE), "-ldl"], check=True)
        self.set(0)

    def set(self, seconds):
        tmp = self.file.with_suffix(".tmp")
        tmp.write_text(f"{int(seconds)}\n")
        os.replace(tmp, self.file)  # the broker never reads a half-written file

    def env(self):
        # under ASan the runtime must come first in the library list: allow the shim before it
        asan = os.environ.get("ASAN_OPTIONS", "detect_leaks=1:abort_on_error=0:halt_on_error=1")
        return {"LD_PRELOAD": str(self.lib), "BW_TIMESHIFT_FILE": str(self.file),
                "ASAN_OPTIONS": asan + ":verify_asan_link_order=0"}
