"""What the tools' tests share: the tools/ folder on the import path, a temporary input file
and a tool's main() run with its command line, its printed output returned."""
import contextlib
import io
import os
import sys
import tempfile
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "tools"))


class ToolTest(unittest.TestCase):
    def write(self, content):
        """A temporary .csv holding `content` (a string, or lines joined with newlines)."""
        if not isinstance(content, str):
            content = "\n".join(content) + "\n"
        f = tempfile.NamedTemporaryFile("w", suffix=".csv", delete=False)
        f.write(content)
        f.close()
        self.addCleanup(os.unlink, f.name)
        return f.name

    def run_main(self, main, argv):
        """What main() prints with sys.argv set to `argv` (restored afterwards)."""
        out = io.StringIO()
        saved = sys.argv
        sys.argv = list(argv)
        try:
            with contextlib.redirect_stdout(out):
                main()
        finally:
            sys.argv = saved
        return out.getvalue()
