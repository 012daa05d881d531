"""eSpeak NG through ctypes: the library that the espeakng-loader wheel ships,
in synchronous mode, with word events (see ../shared/notes/espeak.md)."""

from __future__ import annotations

import ctypes
from pathlib import Path

import numpy as np

_AUDIO_OUTPUT_SYNCHRONOUS = 2
_INITIALIZE_DONT_EXIT = 0x8000  # report errors instead of exiting the process
_CHARS_UTF8 = 1
_RATE, _PITCH = 1, 3  # espeak_PARAMETER
_EVENT_LIST_TERMINATED, _EVENT_WORD = 0, 1


class _Event(ctypes.Structure):
    """espeak_EVENT from speak_lib.h (the union at the end is 8 bytes)."""

    _fields_ = [
        ("type", ctypes.c_int),
        ("unique_identifier", ctypes.c_uint),
        ("text_position", ctypes.c_int),  # 1-based character offset into the text
        ("length", ctypes.c_int),
        ("audio_position", ctypes.c_int),  # ms since the start of this text's audio
        ("sample", ctypes.c_int),  # the same, in samples
        ("user_data", ctypes.c_void_p),
        ("id", ctypes.c_char * 8),
    ]


_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.POINTER(_Event))


class Espeak:
    """eSpeak NG from the espeakng-loader wheel, synchronous mode.

    The library keeps global state, some of it in function statics that nothing
    resets (the pitch-flutter index, automatic gain, noise generators): the same
    call gives slightly different audio depending on everything said before it in
    the process. So `speak` reloads the library first (dlclose, dlopen: about
    0.5 ms), which makes each utterance a pure function of its arguments. One per
    process (espeak_engine() does that), called from one thread.
    """

    def __init__(self):
        import espeakng_loader

        self._path = espeakng_loader.get_library_path()
        self._data_path = espeakng_loader.get_data_path().encode()
        self._libc = ctypes.CDLL(None)  # the process's C library: eSpeak draws breath noise from rand()
        self._chunks: list[np.ndarray] = []
        self._events: list[tuple[int, int]] = []
        self._callback = _CALLBACK(self._receive)  # kept referenced: the library holds a raw pointer
        self._lib = None
        self._unload_checked = False
        self._reload()

    def speak(self, text: str, voice: str, rate: int, pitch: int, seed: int = 0):
        """int16 samples at self.sample_rate and the word events as (text_position, sample).

        seed drives eSpeak's noise sources (breathy and whispered variants).
        """
        self._reload()
        if self._lib.espeak_SetVoiceByName(voice.encode()) != 0:
            raise ValueError(f"eSpeak NG has no voice {voice!r}")
        self._lib.espeak_SetParameter(_RATE, rate, 0)
        self._lib.espeak_SetParameter(_PITCH, pitch, 0)
        self._lib.espeak_ng_SetRandSeed(seed)
        self._libc.srand(seed)
        self._chunks.clear()
        self._events.clear()
        data = text.encode()
        status = self._lib.espeak_Synth(data, len(data) + 1, 0, 0, 0, _CHARS_UTF8, None, None)
        if status != 0:
            raise RuntimeError(f"espeak_Synth failed ({status}) on {text!r}")
        audio = np.concatenate(self._chunks) if self._chunks else np.zeros(0, np.int16)
        return audio, list(self._events)

    def _reload(self) -> None:
        """Unload the library if loaded, load and initialise it afresh."""
        import _ctypes

        if self._lib is not None:
            self._lib.espeak_Terminate()
            _ctypes.dlclose(self._lib._handle)
            if not self._unload_checked:
                self._check_unloaded()
        lib = ctypes.CDLL(self._path)
        lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        lib.espeak_SetSynthCallback.argtypes = [_CALLBACK]
        lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        lib.espeak_ng_SetRandSeed.argtypes = [ctypes.c_long]
        lib.espeak_Synth.argtypes = [
            ctypes.c_char_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int, ctypes.c_uint, ctypes.c_uint,
            ctypes.c_void_p, ctypes.c_void_p,
        ]
        self.sample_rate = lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 0, self._data_path, _INITIALIZE_DONT_EXIT)
        if self.sample_rate <= 0:
            raise RuntimeError(f"espeak_Initialize failed ({self.sample_rate}) with data at {self._data_path}")
        lib.espeak_SetSynthCallback(self._callback)
        self._lib = lib

    def _check_unloaded(self) -> None:
        """Fail if dlclose left the library mapped (someone else holds it): no reset, no reproducibility."""
        self._unload_checked = True
        maps = Path("/proc/self/maps")
        if maps.exists() and Path(self._path).name in maps.read_text():
            raise RuntimeError(
                f"{self._path} stays loaded after dlclose (another module in this process uses it), "
                "so eSpeak's state cannot be reset and the corpus would not be reproducible"
            )

    def _receive(self, wav, n_samples, events) -> int:
        if n_samples > 0:
            self._chunks.append(np.ctypeslib.as_array(wav, (n_samples,)).copy())
        i = 0
        while events[i].type != _EVENT_LIST_TERMINATED:
            if events[i].type == _EVENT_WORD:
                self._events.append((events[i].text_position, events[i].sample))
            i += 1
        return 0  # 0: go on synthesizing


_ENGINE: Espeak | None = None


def espeak_engine() -> Espeak:
    """This process's synthesizer, initialised on first use."""
    global _ENGINE
    if _ENGINE is None:
        _ENGINE = Espeak()
    return _ENGINE
