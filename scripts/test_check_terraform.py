"""Tests of check_terraform.py: the real configuration passes, and each kind of breakage in a
copy of it is reported. Run: python3 -m unittest discover -s scripts -p 'test_check_terraform.py'
"""

import shutil
import subprocess
import sys
import tempfile
import unittest
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import check_terraform  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
TF = ROOT / "deploy" / "terraform" / "gcp"


class BrokenCopy:
    """A temporary copy of the configuration with replacements applied."""

    def __init__(self, edits):
        self.edits = edits

    def __enter__(self) -> Path:
        self.tmp = tempfile.TemporaryDirectory()
        dst = Path(self.tmp.name) / "gcp"
        shutil.copytree(TF, dst, ignore=shutil.ignore_patterns(".terraform*", "*.tfstate*"))
        for name, old, new in self.edits:
            p = dst / name
            text = p.read_text()
            if old is None:
                text += new
            else:
                assert old in text, f"{old!r} is not in {name}: the test is out of date"
                text = text.replace(old, new, 1)
            p.write_text(text)
        return dst

    def __exit__(self, *exc):
        self.tmp.cleanup()


class CheckTerraform(unittest.TestCase):
    def assert_reported(self, edits, *expected):
        with BrokenCopy(edits) as d:
            errors = check_terraform.check(d)
        self.assertTrue(errors, f"no error reported for {edits}")
        for want in expected:
            self.assertTrue(
                any(want in e for e in errors),
                f"expected an error containing {want!r}, got {errors}",
            )

    def test_the_configuration_passes(self):
        self.assertEqual(check_terraform.check(TF), [])

    def test_the_command_fails_on_a_broken_copy_and_passes_on_the_real_one(self):
        ok = subprocess.run(
            [sys.executable, str(ROOT / "scripts" / "check_terraform.py"), str(TF)],
            capture_output=True,
            text=True,
        )
        self.assertEqual(ok.returncode, 0, ok.stderr)
        with BrokenCopy([("events.tf", "uri}/push/pubsub/logs", "uri}/push/logs")]) as d:
            bad = subprocess.run(
                [sys.executable, str(ROOT / "scripts" / "check_terraform.py"), str(d)],
                capture_output=True,
                text=True,
            )
        self.assertEqual(bad.returncode, 1)
        self.assertIn("push_endpoint", bad.stderr)

    def test_a_file_that_does_not_parse(self):
        self.assert_reported([("kms.tf", None, 'resource "x" {\n')], "does not parse")

    def test_an_undeclared_variable(self):
        self.assert_reported(
            [("events.tf", "var.push_max_delivery_attempts", "var.max_attempts")],
            "var.max_attempts is not declared",
            "variable push_max_delivery_attempts is declared but never used",
        )

    def test_an_unused_variable_and_one_without_description(self):
        self.assert_reported(
            [("variables.tf", None, '\nvariable "spare" {\n  type = string\n}\n')],
            "variable spare is declared but never used",
            "variable spare has no description",
        )

    def test_an_undeclared_local(self):
        self.assert_reported(
            [("events.tf", "local.sink_filter", "local.log_filter")],
            "local.log_filter is not declared",
            "local sink_filter is declared but never used",
        )

    def test_a_reference_to_a_missing_resource(self):
        self.assert_reported(
            [("iam.tf", "google_service_account.job.name", "google_service_account.jobs.name")],
            "google_service_account.jobs is not a declared resource",
        )

    def test_an_output_of_a_missing_resource(self):
        self.assert_reported(
            [("outputs.tf", "google_pubsub_topic.logs.id", "google_pubsub_topic.log.id")],
            "output logs_topic: google_pubsub_topic.log is not a declared resource",
        )

    def test_an_undeclared_data_source(self):
        self.assert_reported(
            [("main.tf", "data.google_project.this.number", "data.google_project.that.number")],
            "data.google_project.that is not declared",
        )

    def test_the_push_endpoint_must_be_the_processor_route(self):
        self.assert_reported(
            [("events.tf", "google_cloud_run_v2_service.processor.uri}/push/pubsub/logs",
              "google_cloud_run_v2_service.orchestrator.uri}/push/pubsub/logs")],
            "push_endpoint must be",
        )

    def test_the_push_subscription_needs_an_oidc_token(self):
        self.assert_reported(
            [("events.tf", "    oidc_token {\n      service_account_email = google_service_account.push.email\n      audience              = local.push_audience\n    }\n  }\n\n  # runvoyd", "  }\n\n  # runvoyd")],
            "push_config has no oidc_token",
        )

    def test_the_push_subscription_needs_a_dead_letter_policy(self):
        self.assert_reported(
            [("events.tf", "  dead_letter_policy {\n    dead_letter_topic     = google_pubsub_topic.logs_dead_letter.id\n    max_delivery_attempts = var.push_max_delivery_attempts\n  }\n", "")],
            "no dead_letter_policy",
        )

    def test_the_pubsub_agent_must_be_able_to_dead_letter(self):
        self.assert_reported(
            [("events.tf", 'role         = "roles/pubsub.subscriber"', 'role         = "roles/pubsub.viewer"')],
            "cannot acknowledge",
        )

    def test_the_sink_must_select_cloud_run_jobs(self):
        self.assert_reported(
            [("main.tf", '"resource.type=\\"cloud_run_job\\""', '"resource.type=\\"cloud_run_revision\\""')],
            "does not select resource.type cloud_run_job",
        )

    def test_the_sink_needs_a_writer_identity_that_may_publish(self):
        self.assert_reported(
            [("events.tf", "google_logging_project_sink.job_logs.writer_identity", "local.pubsub_service_agent"),
             ("events.tf", "unique_writer_identity = true", "unique_writer_identity = false")],
            "unique_writer_identity is not true",
            "writer_identity cannot publish",
        )

    def test_the_scheduler_job_needs_an_oidc_token_and_the_route(self):
        self.assert_reported(
            [("events.tf", "uri}/push/scheduler/reconcile", "uri}/api/v1/health/reconcile"),
             ("events.tf", "    oidc_token {\n      service_account_email = google_service_account.push.email\n      audience              = local.push_audience\n    }\n  }\n\n  retry_config", "  }\n\n  retry_config")],
            "http_target.uri must be",
            "http_target has no oidc_token",
        )

    def test_the_eventarc_trigger_path_and_type(self):
        self.assert_reported(
            [("events.tf", 'path    = "/push/eventarc"', 'path    = "/"'),
             ("events.tf", '"google.cloud.audit.log.v1.written"', '"google.cloud.storage.object.v1.finalized"')],
            "at path /push/eventarc",
            "is not one runvoyd accepts",
        )

    def test_no_public_invoker_on_the_processor(self):
        self.assert_reported(
            [("services.tf", "  member   = google_service_account.push.member\n", '  member   = "allUsers"\n')],
            "allUsers may invoke the processor",
        )

    def test_the_audiences_must_match(self):
        self.assert_reported(
            [("events.tf", "audience              = local.push_audience", "audience              = local.processor_url")],
            "differs from RUNVOY_GCP_PUSH_AUDIENCE",
        )

    def test_runvoyd_needs_its_environment(self):
        self.assert_reported(
            [("main.tf", "RUNVOY_GCP_PUSH_SERVICE_ACCOUNT        = google_service_account.push.email\n", "")],
            "lacks RUNVOY_GCP_PUSH_SERVICE_ACCOUNT",
        )

    def test_a_reference_inside_a_string_literal_is_not_one(self):
        # Text that only looks like a reference (in a literal) must not count as a use.
        self.assertEqual(check_terraform.code_of_string('"var.nope ${var.yes} \\"local.no\\""'), "var.yes")
        self.assertEqual(
            check_terraform.code_of_string('${join(" var.no ", [local.a, "${var.b}"])}').split(),
            ["join(", ",", "[local.a,", "var.b", "])"],
        )


if __name__ == "__main__":
    unittest.main()
