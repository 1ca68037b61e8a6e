"""``facemask publish``: push a pack folder to the ModelScope hub (default) or the Hugging Face Hub
(``--hub huggingface``) and verify the hub's copy."""
from __future__ import annotations

import argparse
import sys
import traceback
from typing import Any, Callable, Sequence

from ..tools.hub.token_scrubbing import scrub_token

from .common import UsageError, add_command

DESCRIPTION = """Upload a `facemask pack` folder to the ModelScope hub (default) or, with --hub huggingface, to the
Hugging Face Hub as OWNER/NAME, then list the remote files and verify them against manifest.json (sizes, and sha256
where the listing has them: ModelScope's listing; Hugging Face's LFS metadata, git blob ids for small files).
Exactly the manifest's files and manifest.json are uploaded, from a private temporary copy of them. A folder holding
hidden files or folders (.env, .ssh/), symbolic links (even to a file inside it), other non-regular files, or files
the manifest does not list is refused, naming them, before anything is sent; so is one whose files differ from the
manifest. Files on the hub that are not in the upload (earlier uploads) are reported (--sync deletes them on
ModelScope). The token comes from MODELSCOPE_API_TOKEN (ModelScope) or HF_TOKEN / `hf auth login` (Hugging Face) and
is never printed. ModelScope's resumable-upload cache is off, so nothing is written into the folder.
--dry-run prints exactly what would be uploaded (files, sizes, LFS or inline) without any network access.
Exit codes: 0 published and verified, 1 the hub refused or failed the upload, or its copy differs, 2 usage error
(including a folder that cannot be published as it is, a missing extra and an unreachable hub)."""


def register(commands: Any) -> None:
    parser = add_command(commands, "publish", help="upload a packed repository to the hub", description=DESCRIPTION)
    parser.add_argument("folder", metavar="DIR", help="output folder of `facemask pack`")
    parser.add_argument("--hub", choices=("modelscope", "huggingface"), default="modelscope",
                        help="where to publish (default: modelscope)")
    parser.add_argument("--model-id", "--repo-id", dest="model_id", required=True, metavar="OWNER/NAME",
                        help="repository on the hub")
    parser.add_argument("--private", action="store_true", help="create the repository private (an existing "
                        "repository keeps its visibility)")
    parser.add_argument("--dry-run", action="store_true", help="only show what would be uploaded (no network)")
    parser.add_argument("--sync", action="store_true", help="also delete remote files that the upload (DIR's "
                        "manifest files) does not hold (ModelScope only)")
    parser.add_argument("--message", help="commit message")
    parser.set_defaults(handler=run)


def _print_plan(plan: list, model_id: str) -> None:
    for item in plan:
        print(f"  {item.size:>13,}  {'LFS   ' if item.lfs else 'inline'}  {item.path}")
    print(f"  {sum(p.size for p in plan):>13,}  total: {len(plan)} files ({sum(p.lfs for p in plan)} through LFS)")


def run(args: argparse.Namespace) -> int:
    from ..tools.hub.probe import resolve_endpoint
    from ..tools.hub.publish import TOKEN_ENV, PublishError, check_model_id, publish_folder, upload_plan
    from .common import check_extras

    if args.hub == "huggingface":
        check_extras(args, extras=[("huggingface", "publish --hub huggingface")])
    try:
        check_model_id(args.model_id)
        plan = upload_plan(args.folder)
    except PublishError as exc:
        raise UsageError(str(exc)) from None
    visibility = "private" if args.private else "public"
    if args.hub == "huggingface":
        return _run_huggingface(args, plan, visibility)
    if args.dry_run:
        import os

        print(f"dry run: would upload {args.folder} to {resolve_endpoint()} as {args.model_id} "
              f"(created {visibility} if it does not exist{'; remote files not in DIR deleted' if args.sync else ''}):")
        _print_plan(plan, args.model_id)
        print(f"{TOKEN_ENV} is {'set' if os.environ.get(TOKEN_ENV, '').strip() else 'NOT set (needed to publish)'}")
        return 0
    try:
        result = publish_folder(args.folder, args.model_id, private=args.private, sync=args.sync,
                                commit_message=args.message)
    except PublishError as exc:
        raise UsageError(scrub_token(str(exc))) from None
    except Exception as exc:  # noqa: BLE001 - the hub client's errors (auth, network, quota) are expected failures
        if args.verbose:
            traceback.print_exc()  # masked too: main() scrubs everything the command prints
        detail = scrub_token(" ".join(f"{type(exc).__name__}: {exc}".split()))
        detail = detail if len(detail) <= 800 else detail[:797] + "..."  # a server's error page can be long
        if _unreachable(exc):  # as for Hugging Face: an unreachable hub is exit 2, a hub's refusal exit 1
            from ..model_files.hub_endpoint import ENDPOINT_ENV

            raise UsageError(f"cannot reach the ModelScope hub at {resolve_endpoint()} to publish {args.model_id}: "
                             f"{detail}; check the network, or set {ENDPOINT_ENV} to a reachable hub") from None
        print(f"facemask publish: error: upload to {args.model_id} failed: {detail}", file=sys.stderr)
        return 1
    state = f"created ({visibility})" if result.created else "existing repository, visibility unchanged"
    print(f"uploaded {args.folder} to {resolve_endpoint()} as {args.model_id} ({state}):")
    _print_plan(result.plan, args.model_id)
    return _report_verification(
        args.folder, result.remote_extras, result.problems, scrub_token, extras_hint="; --sync deletes such files",
        verified=f"all {len(result.plan) - 1} manifest files on the hub with the right size; sha256 matched for "
                 f"{result.sha256_checked} (the listing's hashes)")


def _run_huggingface(args: argparse.Namespace, plan: list, visibility: str) -> int:
    """``--hub huggingface``: HfApi.create_repo + upload_folder, then the listing checked against the manifest."""
    from ..model_files.huggingface_download import hf_endpoint, hf_token
    from ..tools.hub.huggingface import HF_TOKEN_HELP, publish_to_hf
    from ..tools.hub.publish import PublishError
    from ..tools.hub.token_scrubbing import scrubbed_output

    if args.sync:
        raise UsageError("--sync is only supported with --hub modelscope")
    token = hf_token()
    with scrubbed_output(token or ""):  # the HF token is masked like the ModelScope one, whoever prints
        if args.dry_run:
            print(f"dry run: would upload {args.folder} to {hf_endpoint()} (Hugging Face) as {args.model_id} "
                  f"(created {visibility} if it does not exist):")
            _print_hf_plan(plan)
            print(f"Hugging Face token (HF_TOKEN or `hf auth login`) is "
                  f"{'set' if token else 'NOT set (needed to publish)'}")
            return 0
        if token is None:
            raise UsageError(f"no Hugging Face token: {HF_TOKEN_HELP}")
        try:
            result = publish_to_hf(args.folder, args.model_id, private=args.private, commit_message=args.message)
        except PublishError as exc:
            raise UsageError(scrub_token(str(exc), token)) from None
        except Exception as exc:  # noqa: BLE001 - huggingface_hub's errors (auth, network, quota) are expected failures
            if args.verbose:
                traceback.print_exc()
            detail = scrub_token(" ".join(f"{type(exc).__name__}: {exc}".split()), token)
            detail = detail if len(detail) <= 800 else detail[:797] + "..."
            if _unreachable(exc):
                raise UsageError(f"cannot reach the Hugging Face Hub at {hf_endpoint()} to publish "
                                 f"{args.model_id}: {detail}") from None
            print(f"facemask publish: error: upload to {args.model_id} on {hf_endpoint()} failed: {detail}",
                  file=sys.stderr)
            return 1
        state = f"created ({visibility})" if result.created else "existing repository, visibility unchanged"
        print(f"uploaded {args.folder} to {hf_endpoint()} (Hugging Face) as {args.model_id} ({state}), "
              f"commit {result.commit}:")
        _print_hf_plan(plan)
        return _report_verification(
            args.folder, result.remote_extras, result.problems, lambda text: scrub_token(text, token),
            verified=f"all {len(plan) - 1} manifest files on the hub with the right size; content hash matched for "
                     f"{result.hashes_checked} (sha256 of LFS files, git blob id of the others)")


def _report_verification(folder: str, extras: Sequence[str], problems: Sequence[str], scrub: Callable[[str], str], *,
                         verified: str, extras_hint: str = "") -> int:
    """Print what the hub holds beyond the folder, then the verification verdict; the exit status."""
    for extra in extras:
        print(f"note: the hub also holds {extra}, which is not part of this upload of {folder} (an earlier "
              f"upload?{extras_hint})")
    if problems:
        print("VERIFICATION FAILED: the hub's copy differs from the manifest:", file=sys.stderr)
        for problem in problems:
            print(f"  {scrub(problem)}", file=sys.stderr)
        return 1
    others = f"; {len(extras)} other file(s) on the hub, listed above" if extras else ""
    print(f"verified: {verified}{others}")
    return 0


def _print_hf_plan(plan: list) -> None:
    for item in plan:
        print(f"  {item.size:>13,}  {item.path}")
    print(f"  {sum(p.size for p in plan):>13,}  total: {len(plan)} files (the hub decides LFS or regular per file)")


def _unreachable(exc: BaseException) -> bool:
    """True when ``exc`` (or its cause) is a connection failure rather than an answer of the hub."""
    while exc is not None:
        name = type(exc).__name__
        if isinstance(exc, (ConnectionError, TimeoutError)) or name in ("ConnectError", "ConnectTimeout",
                                                                         "TimeoutException", "ReadTimeout"):
            return True
        exc = exc.__cause__ or exc.__context__  # type: ignore[assignment]
    return False
