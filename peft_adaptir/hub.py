"""Publish AdaptIR adapters to the Hugging Face Hub and load several of them by repo id.

    >>> push_adapter(model, "user/adaptir-swin2sr-derain", "derain", task="derain-heavy", base_model="caidas/...")
    >>> model = load_adapters(base, {"derain": "user/adaptir-swin2sr-derain", "denoise": "user/denoise@v2"})
    >>> model.set_adapter("derain")

Tokens come from the usual ``huggingface_hub`` places when ``token=None``: the ``HF_TOKEN`` environment variable or
the token saved by ``hf auth login``. ``HF_ENDPOINT`` picks the Hub, ``HF_HUB_OFFLINE=1`` loads from the cache only.
"""

from __future__ import annotations

import difflib
import json
import os
import socket
import tempfile
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

import torch
from huggingface_hub import HfApi, constants
from huggingface_hub.errors import (
    EntryNotFoundError,
    HfHubHTTPError,
    LocalEntryNotFoundError,
    OfflineModeIsEnabled,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from peft import PeftModel

from .backbones.base_name import publish_base_name
from .model_card import build_model_card

try:  # huggingface_hub's HTTP client: the connection-level errors (refused, DNS, timeout) it raises as they are
    from httpx2 import TransportError as _TransportError
except ImportError:  # pragma: no cover - older huggingface_hub releases use httpx
    try:
        from httpx import TransportError as _TransportError
    except ImportError:
        _TransportError = OSError

__all__ = [
    "AdapterHubError",
    "adaptir_push_to_hub",
    "check_adapter_location",
    "check_local_adapter",
    "load_adapters",
    "push_adapter",
]

_TOKEN_HINT = "for a private repo, log in with `hf auth login`, set HF_TOKEN, or pass token="


class AdapterHubError(OSError):
    """An adapter repository, revision or file could not be reached; the message says what to check."""


def _is_adaptir(peft_model: PeftModel) -> bool:
    return any(config.peft_type == "ADAPTIR" for config in peft_model.peft_config.values())  # a str Enum


def _card_for(peft_model: PeftModel, repo_id: str, adapter_name: str, subfolder: str | None, **card_kwargs: Any):
    base = peft_model.get_base_model()
    base_model = card_kwargs.pop("base_model", None) or peft_model.peft_config[adapter_name].base_model_name_or_path
    return build_model_card(
        repo_id,
        base_model=base_model or None,
        base_model_class=f"{type(base).__module__}.{type(base).__name__}",
        subfolder=subfolder,
        **card_kwargs,
    )


def _upload(
    folder: str,
    repo_id: str,
    *,
    private: bool | None,
    token: str | None,
    revision: str | None,
    path_in_repo: str | None,
    commit_message: str,
    commit_description: str | None = None,
    create_pr: bool = False,
) -> str:
    """``create_repo(exist_ok=True)``, the branch if ``revision`` names a new one, then one commit of ``folder``."""
    api = HfApi(token=token)
    try:
        api.create_repo(repo_id, private=private, exist_ok=True)
        if revision not in (None, "main") and not create_pr:
            api.create_branch(repo_id, branch=revision, exist_ok=True)
        commit = api.upload_folder(
            folder_path=folder,
            repo_id=repo_id,
            path_in_repo=path_in_repo,
            revision=revision,
            commit_message=commit_message,
            commit_description=commit_description,
            create_pr=create_pr,
        )
    except HfHubHTTPError as err:
        raise AdapterHubError(
            f"Could not push to {repo_id!r} on {api.endpoint}: {err}. Check that the token can write to that "
            f"namespace ({_TOKEN_HINT})."
        ) from err
    except (_TransportError, ConnectionError) as err:
        raise AdapterHubError(
            f"Could not reach the Hub at {api.endpoint} to push {repo_id!r} ({type(err).__name__}: {err}). Check the "
            "network connection, a proxy, or HF_ENDPOINT; nothing was uploaded, the local adapter is unchanged."
        ) from err
    return commit.pr_url or commit.commit_url


def push_adapter(
    peft_model: PeftModel,
    repo_id: str,
    adapter_name: str = "default",
    *,
    task: str | None = None,
    base_model: str | None = None,
    degradation: str | None = None,
    training_command: str | None = None,
    metrics: Mapping[str, float | str] | None = None,
    subfolder: str | None = None,
    private: bool = False,
    token: str | None = None,
    revision: str | None = None,
    commit_message: str | None = None,
) -> str:
    """Upload one adapter of ``peft_model`` (``adapter_model.safetensors``, ``adapter_config.json``) with an AdaptIR
    model card as ``README.md``; return the commit URL.

    The adapter lands at the repo root (or in ``subfolder``) whatever its name, so
    ``PeftModel.from_pretrained(base, repo_id)`` loads it. ``task``, ``degradation``, ``training_command`` and
    ``metrics`` go into the card (see :func:`peft_adaptir.model_card.build_model_card`); ``base_model`` defaults to
    the adapter config's ``base_model_name_or_path``. ``revision`` is a branch, created from ``main`` if missing.
    Other peft methods (LoRA, ...) are refused with a ValueError: push those with ``model.push_to_hub``.
    """
    if not isinstance(peft_model, PeftModel):
        raise TypeError(f"push_adapter needs a PeftModel holding an AdaptIR adapter, got {type(peft_model).__name__}.")
    if adapter_name not in peft_model.peft_config:
        raise ValueError(f"No adapter named {adapter_name!r}; the model has: {', '.join(peft_model.peft_config)}.")
    kind = str(getattr(peft_model.peft_config[adapter_name].peft_type, "value", None) or "unknown")
    if kind != "ADAPTIR":
        raise ValueError(
            f"Adapter {adapter_name!r} is a {kind} adapter, not AdaptIR: push_adapter writes an AdaptIR model card "
            "(AdaptIR tags and loading advice), which would be wrong for it. Push it with peft's own "
            "model.push_to_hub(repo_id), which keeps peft's card for other methods."
        )
    card = _card_for(
        peft_model,
        repo_id,
        adapter_name,
        subfolder,
        task=task,
        base_model=base_model,
        degradation=degradation,
        training_command=training_command,
        metrics=metrics,
    )
    with tempfile.TemporaryDirectory() as tmp:
        peft_model.save_pretrained(tmp, selected_adapters=[adapter_name])
        publish_base_name(tmp)  # the embedded base by its public name, not this machine's package folder
        # peft writes a non-default adapter into a subfolder named after it; upload that folder's files.
        folder = tmp if adapter_name == "default" else os.path.join(tmp, adapter_name)
        card.save(os.path.join(folder, "README.md"))
        return _upload(
            folder,
            repo_id,
            private=private,
            token=token,
            revision=revision,
            path_in_repo=subfolder,
            commit_message=commit_message or f"Upload AdaptIR adapter {task or adapter_name}",
        )


# ---- model.push_to_hub keeps our card ----


def adaptir_push_to_hub(
    original,
    self: PeftModel,
    repo_id: str,
    *,
    commit_message: str | None = None,
    commit_description: str | None = None,
    private: bool | None = None,
    token: bool | str | None = None,
    revision: str | None = None,
    create_pr: bool = False,
    tags: list[str] | None = None,
    **kwargs: Any,
) -> str:
    """``PeftModel.push_to_hub`` for AdaptIR models: peft's saved layout (every adapter; non-default ones in
    subfolders) with our card. Other peft methods go to the original unchanged."""
    if not _is_adaptir(self):
        return original(
            self,
            repo_id,
            commit_message=commit_message,
            commit_description=commit_description,
            private=private,
            token=token,
            revision=revision,
            create_pr=create_pr,
            tags=tags,
            **kwargs,
        )
    kwargs.pop("max_shard_size", None)  # adapters are small: never sharded
    if kwargs:
        raise TypeError(f"push_to_hub() got unexpected arguments: {', '.join(kwargs)}.")
    names = list(self.peft_config)
    first = names[0]
    card = _card_for(
        self, repo_id, first, None if "default" in names else first, task=first if first != "default" else None
    )
    card.data.tags = list(dict.fromkeys([*card.data.tags, *(tags or [])]))
    with tempfile.TemporaryDirectory() as tmp:
        self.save_pretrained(tmp)
        publish_base_name(tmp)
        card.save(os.path.join(tmp, "README.md"))
        return _upload(
            tmp,
            repo_id,
            private=private,
            token=token,
            revision=revision,
            path_in_repo=None,
            commit_message=commit_message or "Upload AdaptIR adapter",
            commit_description=commit_description,
            create_pr=create_pr,
        )


# ---- loading ----


def _parse_spec(name: str, spec: str | Mapping[str, Any]) -> dict[str, Any]:
    """``"user/repo"``, ``"user/repo@rev"`` or ``{"repo_id", "revision"?, "subfolder"?}`` -> download kwargs."""
    if isinstance(spec, str):
        repo_id, _, revision = spec.partition("@")
        spec = {"repo_id": repo_id, "revision": revision or None}
    if not isinstance(spec, Mapping) or not isinstance(spec.get("repo_id"), str):
        raise ValueError(
            f"Adapter {name!r}: expected 'user/repo', 'user/repo@revision' or a dict with 'repo_id' "
            f"(and optional 'revision', 'subfolder'), got {spec!r}."
        )
    unknown = set(spec) - {"repo_id", "revision", "subfolder"}
    if unknown:
        raise ValueError(f"Adapter {name!r}: unknown keys {sorted(unknown)}; allowed: repo_id, revision, subfolder.")
    return {key: value for key, value in spec.items() if value is not None}


def _hub_cause(err: BaseException) -> BaseException | None:
    """The first ``huggingface_hub`` or connection error in ``err``'s chain (peft wraps them in ``ValueError``)."""
    seen: BaseException | None = err
    while seen is not None:
        if isinstance(seen, (HfHubHTTPError, EntryNotFoundError, OfflineModeIsEnabled, _TransportError)):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


def _connection_error(err: BaseException) -> BaseException | None:
    """A connection-level error (refused, DNS, timeout) anywhere in ``err``'s chain."""
    seen: BaseException | None = err
    while seen is not None:
        if isinstance(seen, (_TransportError, ConnectionError)) and not isinstance(seen, OfflineModeIsEnabled):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


_WEIGHT_FILES = ("adapter_model.safetensors", "adapter_model.bin")


def check_local_adapter(name: str, folder: str | os.PathLike) -> None:
    """Refuse, naming the problem, a local adapter folder that peft would fail on obscurely.

    Checks that ``adapter_config.json`` exists and is valid JSON for an AdaptIR adapter, and that a weights file is
    there. Raises ``FileNotFoundError`` or ``ValueError``.
    """
    config_file = os.path.join(folder, "adapter_config.json")
    if not os.path.isfile(config_file):
        found = ", ".join(sorted(os.listdir(folder))[:8]) or "nothing"
        raise FileNotFoundError(
            f"Adapter {name!r}: {folder} has no adapter_config.json, so it is not a saved adapter (it holds: "
            f"{found}). Pass the folder that save_pretrained wrote."
        )
    try:
        with open(config_file, encoding="utf-8") as file:
            config = json.load(file)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(
            f"Adapter {name!r}: {config_file} is not valid JSON ({err}). Save the adapter again."
        ) from err
    peft_type = config.get("peft_type") if isinstance(config, dict) else None
    if peft_type != "ADAPTIR":
        raise ValueError(
            f"Adapter {name!r}: {folder} is a {peft_type or 'non-peft'} adapter (peft_type in {config_file}), not an "
            "AdaptIR adapter; restore and load_adapters load AdaptIR adapters only."
        )
    if not any(os.path.isfile(os.path.join(folder, weights)) for weights in _WEIGHT_FILES):
        raise FileNotFoundError(
            f"Adapter {name!r}: the weights file {os.path.join(folder, _WEIGHT_FILES[0])} is missing (only the config "
            "is there). Copy or save the whole adapter folder."
        )


def check_adapter_location(name: str, location: str | os.PathLike) -> str | None:
    """The local adapter folder ``location`` names, checked (see :func:`check_local_adapter`); None for a Hub id.

    A string that looks like a path (``./x``, ``a/b/c``, or ``a/b`` where ``a`` exists here) but does not exist is a
    ``FileNotFoundError`` saying the folder was not found, never a Hub lookup.
    """
    folder = os.path.expanduser(os.fspath(location))
    if os.path.exists(folder):
        if not os.path.isdir(folder):
            raise ValueError(f"Adapter {name!r}: {folder} is a file; pass the folder holding adapter_config.json.")
        check_local_adapter(name, folder)
        return folder
    if _looks_like_path(os.fspath(location)):
        raise _missing_folder(name, os.fspath(location))
    return None


def _hub_unreachable() -> str | None:
    """ "connection refused at <endpoint>" when nothing answers at the Hub's address (one quick TCP connect), else
    None. Skipped offline and behind a proxy (the proxy, not us, decides what is reachable)."""
    if constants.HF_HUB_OFFLINE or any(os.environ.get(k) for k in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY")):
        return None
    parts = urlsplit(constants.ENDPOINT)
    if not parts.hostname:
        return None
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        socket.create_connection((parts.hostname, port), timeout=5).close()
    except OSError as err:
        why = "connection refused" if isinstance(err, ConnectionRefusedError) else f"cannot connect ({err})"
        return f"{why} at {constants.ENDPOINT}"
    return None


def _looks_like_path(location: str) -> bool:
    """A string meant as a local folder: a path form no Hub id has, or a first part that exists here."""
    if location.startswith((".", "/", "~")) or "\\" in location or os.sep != "/" and os.sep in location:
        return True
    parts = location.split("/")
    return len(parts) != 2 or os.path.isdir(parts[0])


def _missing_folder(name: str, location: str, hub_unreachable: str | None = None) -> FileNotFoundError:
    parent = os.path.dirname(os.path.abspath(os.path.expanduser(location)))
    near = ""
    if os.path.isdir(parent):
        close = difflib.get_close_matches(os.path.basename(location), os.listdir(parent), n=3)
        if close:
            near = f" Did you mean: {', '.join(os.path.join(os.path.dirname(location), c) for c in close)}?"
    why = f"; as a Hub id it could not be looked up either ({hub_unreachable})" if hub_unreachable else ""
    return FileNotFoundError(f"Adapter {name!r}: folder {location} not found{why}.{near}")


def _explain(name: str, spec: dict[str, Any], cause: BaseException) -> AdapterHubError:
    where = spec["repo_id"] + (f" (subfolder {spec['subfolder']!r})" if "subfolder" in spec else "")
    at = f" at revision {spec['revision']!r}" if "revision" in spec else ""
    if isinstance(cause, (LocalEntryNotFoundError, OfflineModeIsEnabled)):
        why = (
            "it is not in the local cache and the Hub cannot be asked "
            f"(HF_HUB_OFFLINE={os.environ.get('HF_HUB_OFFLINE', 'unset')}). Load it once online to fill the cache, "
            "or unset HF_HUB_OFFLINE"
        )
    elif isinstance(cause, RevisionNotFoundError):
        why = "the revision does not exist. Check the branch, tag or commit after '@'"
    elif isinstance(cause, RepositoryNotFoundError):
        why = f"the repository was not found. Check the repo id; {_TOKEN_HINT}"
    elif isinstance(cause, EntryNotFoundError):
        why = "the repo has no adapter_config.json / adapter_model.safetensors there. Check the subfolder"
    elif isinstance(cause, _TransportError):
        why = (
            f"connection refused at {constants.ENDPOINT} ({type(cause).__name__}). Check the network, a proxy or "
            "HF_ENDPOINT"
        )
    else:
        why = f"the Hub answered: {cause}"
    return AdapterHubError(f"Cannot load adapter {name!r} from {where}{at}: {why}.")


def load_adapters(
    base_model: torch.nn.Module,
    adapters: Mapping[str, str | Mapping[str, Any]],
    *,
    token: str | None = None,
    is_trainable: bool = False,
) -> PeftModel:
    """Load several adapters by Hub id onto ``base_model`` in one call; return the ``PeftModel``.

    ``adapters`` maps adapter name -> ``"user/repo"``, ``"user/repo@revision"`` or
    ``{"repo_id": ..., "revision": ..., "subfolder": ...}``. The first becomes the active adapter; switch with
    ``model.set_adapter(name)`` or route samples with ``model(x, adapter_names=[...])``.
    """
    if not adapters:
        raise ValueError("load_adapters needs at least one adapter: {name: 'user/repo', ...}.")
    model: PeftModel | None = None
    for name, raw in adapters.items():
        if isinstance(raw, (str, os.PathLike)):
            folder = check_adapter_location(name, raw)
            raw = raw if folder is None else {"repo_id": folder}
            if folder is None and (unreachable := _hub_unreachable()) is not None:  # not 30 s of retries
                raise _missing_folder(name, os.fspath(raw), unreachable)
        spec = _parse_spec(name, raw)
        kwargs = {key: value for key, value in spec.items() if key != "repo_id"}
        try:
            if model is None:
                model = PeftModel.from_pretrained(
                    base_model, spec["repo_id"], adapter_name=name, is_trainable=is_trainable, token=token, **kwargs
                )
            else:
                model.load_adapter(
                    spec["repo_id"], adapter_name=name, is_trainable=is_trainable, token=token, **kwargs
                )
        except (ValueError, OSError, HfHubHTTPError) as err:
            cause = _hub_cause(err)
            if cause is None:
                raise
            if not constants.HF_HUB_OFFLINE and _connection_error(err) is not None:  # no such folder, no Hub either
                unreachable = f"connection refused at {constants.ENDPOINT}"
                raise _missing_folder(name, spec["repo_id"], unreachable) from err
            raise _explain(name, spec, cause) from err
    return model
