"""OpenAPI schema touches (drf-spectacular postprocessing hooks, SPECTACULAR_SETTINGS)."""

from __future__ import annotations

# The resource an operation's first path segment names, singular, as the summaries say it.
RESOURCES = {
    "avatars": "avatar", "conversations": "conversation", "gpus": "GPU slot", "jobs": "job", "nodes": "node",
    "videos": "video", "voices": "voice",
}  # fmt: skip
VERBS = {"list": "List", "create": "Create", "retrieve": "Get", "update": "Replace",
         "partial_update": "Change", "destroy": "Delete"}  # fmt: skip
# Operations whose name alone does not say what they do.
SUMMARIES = {
    "avatars_cancel_create": "Cancel an avatar's queued and running steps",
    "avatars_checkpoints_list": "List an avatar's checkpoints",
    "avatars_evaluate_create": "Evaluate a checkpoint (PSNR, SSIM)",
    "avatars_evaluations_list": "List an avatar's quality figures",
    "avatars_proceed_create": "Train although the video failed its checks",
    "avatars_retry_create": "Retry the failed step of an avatar's pipeline",
    "avatars_train_create": "Train an avatar",
    "conversations_messages_list": "List a conversation's turns",
    "conversations_messages_create": "Say something (text or a recording)",
    "conversations_stop_create": "Stop the reply being made",
    "gpus_list": "List the GPU slots",
    "jobs_create": "Submit a demo job",
    "jobs_log_retrieve": "Get a job's log",
    "me_retrieve": "Get your account",
    "me_destroy": "Delete your account and all of its data",
    "nodes_list": "List the GPU nodes",
    "nodes_create": "Register a GPU node",
    "nodes_confirm_host_key_create": "Confirm a node's SSH host key",
    "nodes_fetch_host_key_create": "Fetch a node's SSH host key again",
    "nodes_probe_create": "Probe a node (reachability, runtime, GPUs)",
    "nodes_drain_create": "Drain a node (finish its jobs, take no new ones)",
    "token_create": "Get an API token for a username and password",
}


def _generic(operation_id: str) -> str:
    """videos_list → "List your videos"; nodes_enable_create → "Enable a node"."""
    resource, *words = operation_id.split("_")
    noun = RESOURCES.get(resource, resource.rstrip("s"))
    article = "an" if noun[0] in "aeiouAEIOU" else "a"
    action = "_".join(words)
    if action == "list":
        return f"List your {resource}"
    if action in VERBS:
        return f"{VERBS[action]} {article} {noun}"
    *name, _method = words  # a custom action: its name is a verb ("enable", "resume")
    return f"{' '.join(name).capitalize()} {article} {noun}"


def add_summaries(result, generator, request, public):
    """Every operation gets a one-line summary (Swagger UI shows it beside the path)."""
    for operations in result.get("paths", {}).values():
        for operation in operations.values():
            if isinstance(operation, dict) and "operationId" in operation and not operation.get("summary"):
                name = operation["operationId"]
                operation["summary"] = SUMMARIES.get(name) or _generic(name)
    return result
