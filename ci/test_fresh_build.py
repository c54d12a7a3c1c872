"""ci/fresh_build.py reads cargo's JSON messages: what it calls compiled, fresh and failed."""

import json
import os
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from fresh_build import compiled  # noqa: E402


def artifact(name: str, fresh: bool) -> str:
    return json.dumps({"reason": "compiler-artifact", "package_id": f"registry+x#{name}@1.0.0",
                       "target": {"name": name}, "fresh": fresh})


FINISHED = json.dumps({"reason": "build-finished", "success": True})


class FreshBuildTest(unittest.TestCase):
    def test_a_build_of_fresh_artifacts_compiled_nothing(self):
        self.assertEqual(compiled([artifact("serde", True), artifact("tokio", True), FINISHED]), ([], 2, True))

    def test_an_artifact_compiled_again_is_named(self):
        rebuilt, fresh, success = compiled([artifact("serde", False), artifact("tokio", True), "Compiling x", FINISHED])
        self.assertEqual((len(rebuilt), fresh, success), (1, 1, True))
        self.assertIn("serde", rebuilt[0])

    def test_a_build_that_did_not_finish_is_no_success(self):
        self.assertFalse(compiled([artifact("serde", True)])[2])
        failed = json.dumps({"reason": "build-finished", "success": False})
        self.assertFalse(compiled([artifact("serde", True), failed])[2])


if __name__ == "__main__":
    unittest.main()
