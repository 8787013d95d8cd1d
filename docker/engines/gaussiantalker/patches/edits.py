"""GaussianTalker's fixes, applied by apply_patches.py to the clone at 8ec613b (KU-CVLAB/GaussianTalker,
now cvlab-kaist/GaussianTalker). Each upstream block is quoted line by line exactly as upstream has it, with
the ``file:line`` it was read at (``git show 8ec613b:<file>``); tests/docker/test_engine_patches.py runs the
script on those very lines.

PATCHES: (name, file, ((cites, upstream lines, fixed lines), …)), …
"""

PATCHES = (
    (
        # numpy 1.24 removed np.float; a WAV that is not 16 kHz goes through resampy with it and dies with
        # AttributeError (SyncTalk#117 shows the traceback; GaussianTalker PR #80 fixes it). Only the
        # resampling branch has it: the 16 kHz branch at deepspeech_features.py:148 already reads
        # `resampled_audio = audio.astype(np.float32)` and is left alone.
        "deepspeech-np-float",
        "data_utils/deepspeech_features/deepspeech_features.py",
        (
            (
                "data_utils/deepspeech_features/deepspeech_features.py:143-144",
                (
                    "        resampled_audio = resampy.resample(",
                    "            x=audio.astype(np.float),",
                ),
                (
                    "        resampled_audio = resampy.resample(",
                    "            x=audio.astype(np.float32),  # Talkforge patch (numpy 1.24)",
                ),
            ),
        ),
    ),
    (
        # readCamerasFromTracksTransforms renders the whole val pose sequence whatever the driving audio's
        # length (the loop over `frames` at talking_dataset_readers.py:243); like GaussianTalker PR #80,
        # cut the frame list to the custom audio's frame count and say so. Only the custom-audio branch
        # (:237-238) is touched; the `if custom_aud:` at :374 loads the features and does not match.
        "custom-audio-frame-clamp",
        "scene/talking_dataset_readers.py",
        (
            (
                "scene/talking_dataset_readers.py:237-238",
                (
                    "    if custom_aud:",
                    "        auds = aud_features",
                ),
                (
                    "    if custom_aud:",
                    "        auds = aud_features",
                    "        # Talkforge patch (GaussianTalker PR #80): no more frames than the audio has.",
                    "        frames = frames[:min(len(frames), aud_features.shape[0])]",
                    "        print(f'[INFO] Custom audio mode: limiting render frames to {len(frames)} '",
                    "              f'(audio length: {aud_features.shape[0]})')",
                ),
            ),
        ),
    ),
)
