"""The development workflow, enforced: phases advance one at a time, each with its evidence.

planning -> implementation (a design document path) -> test_creation -> testing (coverage at
or above the project's threshold) -> review (a passing test report) -> done (the required
number of approving reviews, from distinct reviewers, each scoring at or above the
threshold, given during the current review round by someone who is not one of the task's
authors: whoever claimed it or advanced its phases). The one way back is review ->
implementation, for changes a review asked for; it starts a new review round. A task with
no phase yet is treated as in planning. Every advance and review is a history event.
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import ValidationError

from mcp_taskqueue.errors import InvalidTransition, ValidationFailed
from mcp_taskqueue.models import MAX_NAME, MAX_TEXT, Phase, PhaseState, ProjectSettings, Status, TestReport
from mcp_taskqueue.queue import TaskQueue
from mcp_taskqueue.store import Tx

ORDER = list(Phase)
BACKWARD = {(Phase.review, Phase.implementation)}


def requirement(target: Phase, settings: ProjectSettings) -> str:
    """What advancing into `target` needs, in the words of the tool's arguments."""
    return {
        Phase.planning: "nothing",
        Phase.implementation: "design_doc (path of the design document)",
        Phase.test_creation: "nothing",
        Phase.testing: f"coverage >= {settings.coverage_threshold:g} (percent)",
        Phase.review: "test_report with passed > 0, failed = 0 and errors = 0",
        Phase.done: (
            f"{settings.required_reviews} approving reviews (add_review) from distinct reviewers "
            f"with score >= {settings.review_score_threshold:g}"
        ),
    }[target]


def check_advance(
    current: Phase | None,
    target: Phase,
    settings: ProjectSettings,
    *,
    design_doc: str | None,
    coverage: float | None,
    test_report: TestReport | None,
    approvals: int,
) -> dict[str, Any]:
    """Refuse an illegal or unevidenced move, naming what is missing; return the evidence to record."""
    here = current or Phase.planning
    if current is not None and target == current:
        raise InvalidTransition(f"the task is already in phase {target.value}")
    step = ORDER.index(target) - ORDER.index(here)
    if step < 0:
        if (here, target) in BACKWARD:
            return {}
        raise InvalidTransition(
            f"cannot go back from {here.value} to {target.value}; the only way back is review -> implementation"
        )
    if step > 1:
        skipped = ORDER[ORDER.index(here) + 1 : ORDER.index(target) + 1]
        needs = "; ".join(f"{p.value}: {requirement(p, settings)}" for p in skipped)
        raise InvalidTransition(
            f"cannot skip from {here.value} to {target.value}: advance one phase at a time, "
            f"next is {skipped[0].value}. Evidence still missing - {needs}"
        )
    if target == Phase.implementation:
        if not design_doc or not design_doc.strip():
            raise InvalidTransition(f"advancing to implementation needs {requirement(target, settings)}")
        return {"design_doc": design_doc.strip()}
    if target == Phase.testing:
        if coverage is None:
            raise InvalidTransition(f"advancing to testing needs {requirement(target, settings)}")
        if coverage < settings.coverage_threshold:
            raise InvalidTransition(
                f"coverage {coverage:g}% is below the project's threshold of {settings.coverage_threshold:g}%; "
                "add tests, measure again, then advance"
            )
        return {"coverage": coverage}
    if target == Phase.review:
        if test_report is None:
            raise InvalidTransition(f"advancing to review needs {requirement(target, settings)}")
        if not test_report.passing:
            raise InvalidTransition(
                f"the test report is not passing (passed {test_report.passed}, failed {test_report.failed}, "
                f"errors {test_report.errors}); fix the failures and report a passing run"
            )
        return {"test_report": test_report.model_dump(exclude_none=True)}
    if target == Phase.done and approvals < settings.required_reviews:
        raise InvalidTransition(
            f"advancing to done needs {requirement(target, settings)}; this review round has {approvals}"
        )
    return {}


# History actions whose actor is an author of the task: whoever claimed it (any attempt) and
# whoever moved it forward through its phases. phase_back is not authorship: sending work back
# for changes is what a reviewer does, and whoever then redoes it advances it forward again.
AUTHOR_ACTIONS = {"claimed": "claimed it", "phase": "advanced its phases"}  # action -> what they did


def refuse_author(tx: Tx, row: Any, reviewer: str) -> None:
    """A reviewer may not approve their own work: refuse anyone who appears as an author."""
    did = tx.authorship(row["seq"], reviewer, tuple(AUTHOR_ACTIONS))
    if row["worker"] is not None and reviewer.strip() == row["worker"].strip():
        did.add("claimed")
    if did:
        what = " and ".join(text for action, text in AUTHOR_ACTIONS.items() if action in did)
        raise ValidationFailed(
            f"{reviewer!r} is an author of task {row['id']} ({what}); "
            "a review must come from someone else (not anyone who claimed the task or advanced its phases)"
        )


class Development:
    """advance_phase and add_review, each one transaction through the queue's store."""

    def __init__(self, queue: TaskQueue) -> None:
        self.queue = queue

    def _settings(self, tx: Tx, project: str) -> ProjectSettings:
        row = tx.get_project(project)
        return ProjectSettings(**json.loads(row["settings"] or "{}")) if row is not None else ProjectSettings()

    @staticmethod
    def _approvals(reviews: list[Any], settings: ProjectSettings) -> int:
        return sum(1 for r in reviews if r["approved"] and r["score"] >= settings.review_score_threshold)

    def _state(self, tx: Tx, row: Any, settings: ProjectSettings) -> PhaseState:
        dev = tx.get_development(row["seq"])
        round_ = dev["review_round"] if dev is not None else 0
        reviews = tx.reviews(row["seq"], round_) if round_ else []
        phase = Phase(row["phase"]) if row["phase"] else None
        position = ORDER.index(phase) if phase is not None else -1
        following = ORDER[position + 1] if position + 1 < len(ORDER) else None
        approving = [r for r in reviews if r["approved"] and r["score"] >= settings.review_score_threshold]
        return PhaseState(
            task_id=row["id"],
            phase=phase.value if phase is not None else None,
            version=row["version"],
            approvals=len(approving),
            required_reviews=settings.required_reviews,
            approved_by=[r["reviewer"] for r in approving],
            next_phase=None if following is None else following.value,
            next_requires=None if following is None else requirement(following, settings),
        )

    def status(self, task_id: str) -> PhaseState:
        def op(tx: Tx) -> PhaseState:
            row = self.queue.task_row(tx, task_id)
            return self._state(tx, row, self._settings(tx, row["project"]))

        return self.queue.store.read(op)

    def advance(
        self,
        task_id: str,
        to: Phase | str,
        *,
        design_doc: str | None = None,
        coverage: float | None = None,
        test_report: TestReport | dict[str, Any] | None = None,
        reason: str | None = None,
        actor: str | None = None,
    ) -> PhaseState:
        """Move the task to phase `to` if the gate's evidence holds; the change is a history event."""
        try:
            target = Phase(to)
        except ValueError:
            raise ValidationFailed(f"unknown phase {to!r}; phases: {', '.join(p.value for p in ORDER)}") from None
        if coverage is not None and not 0 <= coverage <= 100:
            raise ValidationFailed("coverage is a percentage between 0 and 100")
        try:
            report = TestReport.model_validate(test_report) if isinstance(test_report, dict) else test_report
        except ValidationError as exc:
            problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
            raise ValidationFailed(f"test_report is not a test report ({problems})") from None
        for text, what in ((design_doc, "design_doc"), (reason, "reason")):
            if text is not None and len(text) > MAX_TEXT:
                raise ValidationFailed(f"{what} is {len(text)} characters; the limit is {MAX_TEXT}")

        def op(tx: Tx) -> PhaseState:
            now = self.queue.clock()
            row = self.queue.task_row(tx, task_id)
            if row["status"] in (Status.failed.value, Status.cancelled.value):
                raise InvalidTransition(f"task {task_id} is {row['status']}; retry_task it before advancing its phase")
            settings = self._settings(tx, row["project"])
            dev = tx.get_development(row["seq"])
            round_ = dev["review_round"] if dev is not None else 0
            current = Phase(row["phase"]) if row["phase"] else None
            approvals = self._approvals(tx.reviews(row["seq"], round_), settings) if round_ else 0
            evidence = check_advance(
                current,
                target,
                settings,
                design_doc=design_doc,
                coverage=coverage,
                test_report=report,
                approvals=approvals,
            )
            if target == Phase.done:
                evidence = {"approvals": approvals, "review_round": round_}
            recorded = json.loads(dev["evidence"]) if dev is not None else {}
            if evidence:
                recorded[target.value] = evidence
            if target == Phase.review:
                round_ += 1  # a new round: approvals of an earlier round do not count again
            tx.upsert_development(row["seq"], round_, json.dumps(recorded))
            tx.set_phase(row["seq"], target.value, now)
            details: dict[str, Any] = {"phase": target.value}
            if evidence:
                details["evidence"] = evidence
            if reason:
                details["reason"] = reason
            action = "phase_back" if current is not None and ORDER.index(target) < ORDER.index(current) else "phase"
            self.queue.record_event(tx, row["seq"], now, actor, action, current.value if current else None, details)
            return self._state(tx, self.queue.task_row(tx, task_id), settings)

        return self.queue.store.write(op)

    def add_review(
        self,
        task_id: str,
        reviewer: str,
        score: float,
        approved: bool = True,
        comment: str | None = None,
    ) -> PhaseState:
        """Record a reviewer's verdict in the current review round (a later one from them replaces it).

        Refused, changing nothing, when the reviewer is one of the task's authors (refuse_author).
        """
        if not 0 <= score <= 1:
            raise ValidationFailed("score must be between 0 and 1")
        if not reviewer.strip() or len(reviewer) > MAX_NAME:
            raise ValidationFailed(f"reviewer must be a name of 1 to {MAX_NAME} characters")
        if comment is not None and len(comment) > MAX_TEXT:
            raise ValidationFailed(f"comment is {len(comment)} characters; the limit is {MAX_TEXT}")

        def op(tx: Tx) -> PhaseState:
            now = self.queue.clock()
            row = self.queue.task_row(tx, task_id)
            if row["phase"] != Phase.review.value:
                raise InvalidTransition(
                    f"task {task_id} is in phase {row['phase'] or 'none'}; reviews are taken in the review phase "
                    "(advance_phase to review with a passing test_report first)"
                )
            refuse_author(tx, row, reviewer)
            dev = tx.get_development(row["seq"])
            round_ = dev["review_round"] if dev is not None else 1
            tx.upsert_review(row["seq"], round_, reviewer, score, approved, comment, now)
            tx.update_task(row["seq"], {"updated_at": now})
            review = {"reviewer": reviewer, "score": score, "approved": approved, "round": round_}
            if comment:
                review["comment"] = comment
            self.queue.record_event(tx, row["seq"], now, reviewer, "review", None, review)
            return self._state(tx, self.queue.task_row(tx, task_id), self._settings(tx, row["project"]))

        return self.queue.store.write(op)
