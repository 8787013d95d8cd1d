from django.conf import settings
from django.db import models

from gpu_nodes.models import slug_validator  # one rule for every name that reaches paths

from .engines.registry import DEFAULT_ENGINE, ENGINES, engine_choices, engine_for


class Avatar(models.Model):
    """A person-specific talking-head model in the making: their video, consent, checks and training."""

    # The registry's engines as choices (a member per engine, its name in capitals), for code and tests that
    # create avatars. Never compare an avatar's engine to one of them: ask its plug-in (``engine_plugin``).
    Engine = models.TextChoices(
        "Engine", [(name.upper(), (name, engine.label)) for name, engine in ENGINES.items()]
    )

    class Status(models.TextChoices):
        NEEDS_ATTENTION = "needs_attention", "Video needs attention"
        READY_TO_TRAIN = "ready_to_train", "Ready to train"
        TRAINING = "training", "Training"
        TRAINED = "trained", "Trained"
        FAILED = "failed", "Failed"

    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="avatars")
    name = models.CharField(max_length=100)
    slug = models.CharField(max_length=63, unique=True, validators=[slug_validator], editable=False)
    engine = models.CharField(max_length=20, choices=engine_choices, default=DEFAULT_ENGINE)
    status = models.CharField(max_length=20, choices=Status.choices)
    training_settings = models.JSONField(default=dict, blank=True, help_text="Iterations, config, …")
    preferred_node = models.ForeignKey(
        "gpu_nodes.Node", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )

    video = models.CharField(
        max_length=300, help_text="The normalised training video, relative to MEDIA_ROOT."
    )
    video_info = models.JSONField(default=dict, blank=True)
    au_csv = models.CharField(max_length=300, blank=True, help_text="Uploaded OpenFace au.csv, if any.")
    quality = models.JSONField(default=dict, blank=True, help_text="The quality gate's report.")
    quality_override_at = models.DateTimeField(
        null=True, blank=True, help_text="When the owner chose to train despite failed checks."
    )

    consent_given_at = models.DateTimeField()
    consent_given_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    consent_statement = models.TextField(help_text="The statement the uploader confirmed, word for word.")

    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [models.UniqueConstraint(fields=["owner", "name"], name="avatar_unique_name_per_owner")]

    def __str__(self) -> str:
        return f"{self.name} ({self.get_engine_display()})"

    @property
    def folder(self) -> str:
        return f"avatars/{self.slug}"

    @property
    def engine_plugin(self):
        """The engine plug-in that trains and renders this avatar (avatars/engines/registry.py)."""
        return engine_for(self.engine)


class DatasetCopy(models.Model):
    """The avatar's preprocessed dataset on one node, and how far preprocessing got there."""

    avatar = models.ForeignKey(Avatar, on_delete=models.CASCADE, related_name="datasets")
    node = models.ForeignKey("gpu_nodes.Node", on_delete=models.CASCADE, related_name="datasets")
    path = models.CharField(max_length=500)
    stages = models.JSONField(
        default=dict, blank=True, help_text="Preprocessing stage → done / failed / pending."
    )
    complete = models.BooleanField(default=False)
    size_bytes = models.BigIntegerField(default=0, help_text="Measured on the node after preprocessing.")
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["avatar", "node"], name="dataset_one_copy_per_node")]

    def __str__(self) -> str:
        return f"{self.avatar.slug} on {self.node.name}"


class Checkpoint(models.Model):
    """A saved model state on a node (GaussianTalker point_cloud/iteration_N, SyncTalk ngp_epNNNN.pth), of
    the training run that wrote it. A run is the train job that started it (a retry continues its run);
    each run trains in a folder of its own, ``<model folder>/<slug>/run-<id>``. No run: a checkpoint
    recorded before runs had folders (``<model folder>/<slug>``)."""

    avatar = models.ForeignKey(Avatar, on_delete=models.CASCADE, related_name="checkpoints")
    node = models.ForeignKey("gpu_nodes.Node", on_delete=models.CASCADE, related_name="checkpoints")
    run = models.ForeignKey(
        "jobs.Job", null=True, blank=True, on_delete=models.CASCADE, related_name="run_checkpoints",
        help_text="The training run (its first train job) that wrote it.",
    )  # fmt: skip
    iteration = models.IntegerField()
    stage = models.CharField(max_length=20, blank=True)
    path = models.CharField(max_length=500)
    size_bytes = models.BigIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["avatar", "-iteration"]
        constraints = [
            models.UniqueConstraint(
                fields=["avatar", "node", "run", "stage", "iteration"],
                condition=models.Q(run__isnull=False),
                name="checkpoint_unique_in_run",
            ),
            models.UniqueConstraint(
                fields=["avatar", "node", "stage", "iteration"],
                condition=models.Q(run__isnull=True),
                name="checkpoint_unique",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.avatar.slug} {self.stage} {self.iteration}"


class Evaluation(models.Model):
    """Quality figures of one checkpoint: its render of the validation split against the dataset's
    ground-truth frames (``gt_imgs`` of ``transforms_val.json``), with the per-frame series. One per
    iteration of each training run (a run's figures stay when a later run saves the same iteration)."""

    avatar = models.ForeignKey(Avatar, on_delete=models.CASCADE, related_name="evaluations")
    run = models.ForeignKey(
        "jobs.Job", null=True, blank=True, on_delete=models.CASCADE, related_name="run_evaluations",
        help_text="The training run of the evaluated checkpoint.",
    )  # fmt: skip
    checkpoint = models.ForeignKey(
        Checkpoint, null=True, blank=True, on_delete=models.SET_NULL, related_name="evaluations"
    )
    iteration = models.IntegerField(help_text="The checkpoint's iteration (or epoch for SyncTalk).")
    job = models.ForeignKey("jobs.Job", null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    psnr = models.FloatField(null=True, blank=True, help_text="Mean PSNR in dB over the compared frames.")
    ssim = models.FloatField(null=True, blank=True, help_text="Mean SSIM over the compared frames.")
    lpips = models.FloatField(null=True, blank=True, help_text="Only when LPIPS weights are available.")
    frames = models.PositiveIntegerField(default=0, help_text="Frames compared.")
    rendered_frames = models.PositiveIntegerField(default=0)
    reference_frames = models.PositiveIntegerField(default=0)
    per_frame = models.JSONField(default=dict, blank=True, help_text='{"psnr": [...], "ssim": [...]}')
    notes = models.JSONField(default=list, blank=True, help_text="Mismatches and what was not computed.")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["avatar", "run", "iteration"]
        constraints = [
            models.UniqueConstraint(
                fields=["avatar", "run", "iteration"],
                condition=models.Q(run__isnull=False),
                name="evaluation_one_per_run_iteration",
            ),
            models.UniqueConstraint(
                fields=["avatar", "iteration"],
                condition=models.Q(run__isnull=True),
                name="evaluation_one_per_iteration",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.avatar.slug} @ {self.iteration}: PSNR {self.psnr} SSIM {self.ssim}"
