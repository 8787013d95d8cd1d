import socket

from django.core.validators import MaxValueValidator, MinValueValidator, RegexValidator
from django.db import models

# Names that reach paths, queue names and container names: lower-case slugs, nothing else.
SLUG_PATTERN = r"^[a-z0-9][a-z0-9-]{0,62}$"
slug_validator = RegexValidator(
    SLUG_PATTERN, "Use 1–63 lower-case letters, digits and hyphens, starting with a letter or digit."
)


class Node(models.Model):
    """A machine that runs engine jobs: this machine (``local``) or one reached over SSH."""

    class Kind(models.TextChoices):
        LOCAL = "local", "Local"
        SSH = "ssh", "SSH"

    class Runtime(models.TextChoices):
        DOCKER = "docker", "Docker container"
        BARE = "bare", "Bare environment (conda env / venv)"

    class Status(models.TextChoices):
        ONLINE = "online", "Online"
        OFFLINE = "offline", "Offline"
        DRAINING = "draining", "Draining"

    name = models.CharField(max_length=63, unique=True, validators=[slug_validator])
    kind = models.CharField(max_length=8, choices=Kind.choices, default=Kind.LOCAL)
    host = models.CharField(
        max_length=255,
        blank=True,
        help_text="SSH nodes: host name or address. Local nodes: their machine's host name (blank: any).",
    )
    port = models.PositiveIntegerField(
        default=22, validators=[MinValueValidator(1), MaxValueValidator(65535)], help_text="SSH nodes."
    )
    username = models.CharField(max_length=64, blank=True, help_text="SSH nodes: login user.")
    # Credentials, encrypted at rest (gpu_nodes.secrets); never sent out by the API or shown again.
    password_encrypted = models.TextField(blank=True, editable=False)
    private_key_encrypted = models.TextField(blank=True, editable=False)
    key_passphrase_encrypted = models.TextField(blank=True, editable=False)
    jump = models.ForeignKey(
        "self",
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="jumped_nodes",
        help_text="SSH nodes: reach this node through that SSH node (a bastion / jump host).",
    )
    # The server's host key, pinned at registration once a staff user confirmed its fingerprint.
    host_key_type = models.CharField(max_length=64, blank=True, editable=False)
    host_key = models.TextField(blank=True, editable=False, help_text="base64 of the pinned host key")
    host_key_fingerprint = models.CharField(max_length=100, blank=True, editable=False)
    host_key_confirmed_at = models.DateTimeField(null=True, blank=True, editable=False)
    workdir = models.CharField(
        max_length=500, help_text="Absolute folder on the node that holds datasets, models and job files."
    )
    runtime = models.CharField(max_length=8, choices=Runtime.choices, default=Runtime.BARE)
    # Each engine has its own image (NodeEngine.image); this one runs the CPU demo and our own scripts.
    docker_image = models.CharField(
        max_length=255,
        blank=True,
        help_text="Docker runtime: the image for the CPU demo; each engine has its own (engines below).",
    )
    environment = models.CharField(
        max_length=500,
        blank=True,
        help_text="Bare runtime: the environment's bin folder (a venv or conda env), prepended to PATH.",
    )
    enabled = models.BooleanField(
        default=True, help_text="Disabled nodes get no new jobs and are not probed."
    )
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.OFFLINE)
    last_seen_at = models.DateTimeField(null=True, blank=True)
    last_error = models.TextField(blank=True)
    facts = models.JSONField(
        default=dict, blank=True, help_text="What the last probe found (OS, disk, docker …)."
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    @property
    def queue_name(self) -> str:
        """The RQ queue whose workers run this node's jobs."""
        return f"node-{self.name}"

    @property
    def reachable_here(self) -> bool:
        """Whether this process can act on the node: SSH nodes from anywhere, a local node only on its own
        machine (its GPUs and job processes exist only there)."""
        return self.kind == self.Kind.SSH or self.host in ("", socket.gethostname())

    @property
    def host_key_pinned(self) -> bool:
        return bool(self.host_key and self.host_key_confirmed_at)

    @property
    def has_credentials(self) -> bool:
        return bool(self.password_encrypted or self.private_key_encrypted)

    @property
    def accepts_jobs(self) -> bool:
        return self.enabled and self.status == self.Status.ONLINE


class Gpu(models.Model):
    """One schedulable slot of a node: a GPU, or the single CPU slot of a node without GPUs."""

    CPU_INDEX = -1

    node = models.ForeignKey(Node, on_delete=models.CASCADE, related_name="gpus")
    index = models.IntegerField(help_text="nvidia-smi index; -1 is the CPU slot of a node without GPUs.")
    name = models.CharField(max_length=128)
    memory_total_mb = models.PositiveIntegerField(default=0)
    memory_used_mb = models.PositiveIntegerField(default=0)
    utilization_pct = models.PositiveSmallIntegerField(default=0)
    present = models.BooleanField(default=True, help_text="False once a probe no longer finds it.")
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["node__name", "index"]
        constraints = [models.UniqueConstraint(fields=["node", "index"], name="gpu_unique_index_per_node")]

    def __str__(self) -> str:
        return f"{self.node.name}:{self.label}"

    @property
    def is_cpu(self) -> bool:
        return self.index == self.CPU_INDEX

    @property
    def label(self) -> str:
        """The original prototype's ``--gpu`` spelling: ``GPU0``, ``GPU1`` … or ``CPU``."""
        return "CPU" if self.is_cpu else f"GPU{self.index}"


class NodeCleanup(models.Model):
    """A folder on a node that must go because the data it holds was deleted (an avatar's dataset and
    model, a job's scratch folder). Recorded in the same transaction as the deletion, removed as soon as
    the node can be reached (at once when it is online, else by the probe that finds it back online), and
    kept with the reason while removing it fails. See gpu_nodes/cleanup.py."""

    node = models.ForeignKey(Node, on_delete=models.CASCADE, related_name="cleanups")
    path = models.CharField(max_length=1000, help_text="Absolute, inside the node's workdir.")
    reason = models.CharField(
        max_length=200, blank=True, help_text="What was deleted, e.g. avatar anna-3f9a1c."
    )
    created_at = models.DateTimeField(auto_now_add=True)
    attempts = models.PositiveIntegerField(default=0)
    last_tried_at = models.DateTimeField(null=True, blank=True)
    last_error = models.TextField(blank=True)

    class Meta:
        ordering = ["node", "created_at", "id"]
        constraints = [models.UniqueConstraint(fields=["node", "path"], name="node_cleanup_unique_path")]

    def __str__(self) -> str:
        return f"{self.node.name}:{self.path}"


class NodeEngine(models.Model):
    """An engine installed on a node: the image it runs in (docker runtime), or the folder its repository
    is checked out in and the environment it runs in (bare runtime), and what the last self-test of it
    found (``manage.py node_selftest``).

    A node runs an engine's jobs only when it has a row for that engine (placement, jobs/services.py); the
    CPU demo needs none and runs on every node. GaussianTalker and SyncTalk pin different Python and torch
    versions (their README's conda environments), so on a bare node each engine has its own environment."""

    node = models.ForeignKey(Node, on_delete=models.CASCADE, related_name="engines")
    engine = models.CharField(
        max_length=32,
        validators=[slug_validator],
        help_text="An engine's name (avatars/engines/registry.py).",
    )
    image = models.CharField(
        max_length=255, blank=True, help_text="Docker runtime: this engine's image, e.g. synctalk:latest."
    )
    install_dir = models.CharField(
        max_length=500,
        blank=True,
        help_text="Bare runtime: the engine's repository on the node (blank: <workdir>/engines/<name>).",
    )
    environment = models.CharField(
        max_length=500,
        blank=True,
        help_text="Bare runtime: this engine's environment bin folder (blank: the node's environment).",
    )
    selftest = models.JSONField(
        default=dict, blank=True, editable=False, help_text="The last self-test's checks (pass/fail, fix)."
    )
    selftest_at = models.DateTimeField(null=True, blank=True, editable=False)

    class Meta:
        ordering = ["node__name", "engine"]
        constraints = [models.UniqueConstraint(fields=["node", "engine"], name="node_engine_unique")]

    def __str__(self) -> str:
        return f"{self.node.name}:{self.engine}"

    @property
    def repo_dir(self) -> str:
        """Where the engine's repository is on the node (bare runtime)."""
        return self.install_dir or f"{self.node.workdir.rstrip('/')}/engines/{self.engine}"

    @property
    def env_bin(self) -> str:
        """The bin folder first on PATH for this engine's runs (bare runtime): its own, else the node's."""
        return self.environment or self.node.environment

    @property
    def selftest_passed(self) -> bool | None:
        """None: never self-tested; else whether every check of the last self-test passed."""
        checks = self.selftest.get("checks") if self.selftest else None
        if not checks:
            return None
        return all(check.get("ok") for check in checks)
