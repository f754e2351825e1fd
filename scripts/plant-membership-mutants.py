#!/usr/bin/env python3
"""Plants, one at a time, the membership.rs mutants that only unit tests catch (MUTANTS.md,
fourteenth session), runs the unit test named for each, then restores the file.

    python3 scripts/plant-membership-mutants.py        # every plant
    python3 scripts/plant-membership-mutants.py 3 7    # plants 3 and 7 only

Prints CAUGHT when the test fails with the mutant in, MISSED when it passes. Each plant costs
one build of the replication crate's unit tests (about a minute on two cores). A line number
that no longer holds the text to replace stops the script: the source moved, update the list.
"""
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SOURCE = os.path.join(ROOT, "replication/src/site/membership.rs")

# (line, text, replaced by, the unit test that must fail), as cargo-mutants writes the mutant.
PLANTS = [
    (139, "counts_in_group() && !", "counts_in_group() || !",
     "a_joining_site_stands_with_priority_zero_until_it_is_a_member"),
    (280, "as_ref() == Some", "as_ref() != Some",
     "a_silent_helper_is_named_in_the_join_failure"),
    (343, "if master != from", "if true",
     "a_client_asked_by_its_master_to_help_a_join_answers_rather_than_forwarding_it_back"),
    (363, "in_flight() > 0", "in_flight() < 0",
     "a_join_asked_while_a_removal_waits_for_its_acks_is_refused_at_once"),
    (425, "from != site", "from == site",
     "a_client_helper_relays_the_masters_answer_to_the_joiner"),
    (441, "messages_ignored += 1", "messages_ignored *= 1",
     "a_join_answer_to_a_site_that_is_not_joining_is_ignored_and_counted"),
    (445, "if gen < self.term()", "if true",
     "a_joiner_refuses_an_admission_from_below_its_term_and_takes_one_of_its_term"),
    (445, "gen < self.term()", "gen <= self.term()",
     "a_joiner_refuses_an_admission_from_below_its_term_and_takes_one_of_its_term"),
    (449, "messages_ignored += 1", "messages_ignored *= 1",
     "a_joiner_refuses_an_admission_from_below_its_term_and_takes_one_of_its_term"),
    # `finish_join_if_member` emptied: its only statement never runs.
    (482, "if self.join_at.is_some()", "if false && self.join_at.is_some()",
     "a_join_whose_answer_is_lost_ends_when_the_joiner_reads_itself_present"),
    (557, "ack_ms + self", "ack_ms - self",
     "a_forwarded_removal_the_master_never_hears_times_out_after_two_ack_timeouts_and_a_retry"),
    (557, "ack_ms + self", "ack_ms * self",
     "a_forwarded_removal_the_master_never_hears_times_out_after_two_ack_timeouts_and_a_retry"),
    (557, "2 * self", "2 + self",
     "a_forwarded_removal_the_master_never_hears_times_out_after_two_ack_timeouts_and_a_retry"),
    (557, "2 * self", "2 / self",
     "a_forwarded_removal_the_master_never_hears_times_out_after_two_ack_timeouts_and_a_retry"),
    (703, "gen < self.meta.gen ||", "gen < self.meta.gen &&",
     "a_removal_notice_from_an_older_generation_or_to_a_joining_site_is_ignored_and_counted"),
    (704, "messages_ignored += 1", "messages_ignored *= 1",
     "a_removal_notice_from_an_older_generation_or_to_a_joining_site_is_ignored_and_counted"),
    (713, "last < at.lsn", "last <= at.lsn",
     "a_removal_notice_of_the_admitting_generation_counts_once_its_log_passes_the_admission"),
    (715, "messages_ignored += 1", "messages_ignored *= 1",
     "a_removal_notice_of_the_admitting_generation_counts_once_its_log_passes_the_admission"),
]


def run_test(name):
    """The verdict of the unit test `name` on the tree as it stands."""
    cmd = ["cargo", "test", "-q", "-p", "repsim-replication", "--lib", "--", name]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    if done.returncode == 0:
        return "MISSED"
    if "test result: FAILED" in done.stdout + done.stderr:
        return "CAUGHT"
    return "BUILD FAILED"


def main():
    chosen = {int(a) for a in sys.argv[1:]}
    original = open(SOURCE).read()
    try:
        for i, (line, text, mutant, test) in enumerate(PLANTS):
            if chosen and i not in chosen:
                continue
            lines = original.split("\n")
            if text not in lines[line - 1]:
                sys.exit(f"line {line} no longer holds {text!r}: {lines[line - 1]!r}")
            lines[line - 1] = lines[line - 1].replace(text, mutant, 1)
            with open(SOURCE, "w") as f:
                f.write("\n".join(lines))
            print(f"{i:2} line {line}: {text!r} -> {mutant!r}: {run_test(test)}", flush=True)
    finally:
        with open(SOURCE, "w") as f:
            f.write(original)


if __name__ == "__main__":
    main()
