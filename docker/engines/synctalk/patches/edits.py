"""SyncTalk's fixes, applied by apply_patches.py to the clone at d2427a3 (ZiqiaoPeng/SyncTalk). Each
upstream block is quoted line by line exactly as upstream has it, with the ``file:line`` it was read at
(``git show d2427a3:<file>``); tests/docker/test_engine_patches.py runs the script on those very lines.

PATCHES: (name, file, ((cites, upstream lines, fixed lines), …)), …
"""

# The four CUDA extensions (README.md:66-69 installs them) compile with -std=c++14, for the host compiler
# and for nvcc. PyTorch 2's headers refuse it (c10/util/C++17.h: "You need C++17 to compile PyTorch"), and
# PyTorch 2.0 is the oldest with sm_90 (Hopper) kernels: build them as C++17. Only the Linux lines change;
# the Windows branch (`/std:c++17`) already is.
_CPP17 = "Talkforge patch: PyTorch 2 needs C++17"


def _cpp17(extension: str, nvcc_line: int, host_line: int):
    path = f"{extension}/setup.py"
    return (
        f"cpp17-{extension}",
        path,
        (
            (
                f"{path}:{nvcc_line}",
                ("    '-O3', '-std=c++14',",),
                (f"    '-O3', '-std=c++17',  # {_CPP17}",),
            ),
            (
                f"{path}:{host_line}",
                ("    c_flags = ['-O3', '-std=c++14']",),
                (f"    c_flags = ['-O3', '-std=c++17']  # {_CPP17}",),
            ),
        ),
    )


PATCHES = (
    (
        # numpy 1.24 removed np.float (SyncTalk pins numpy 1.24.4, requirements.txt:6): a WAV that is not
        # 16 kHz goes through resampy with it and dies with AttributeError (SyncTalk#117). The 16 kHz branch
        # at deepspeech_features.py:148 already reads `audio.astype(np.float32)` and is left alone.
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
    _cpp17("freqencoder", 8, 14),
    _cpp17("shencoder", 8, 13),
    _cpp17("gridencoder", 8, 13),
    _cpp17("raymarching", 8, 14),
)
