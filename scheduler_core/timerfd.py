"""A Linux timerfd on CLOCK_REALTIME, through ctypes: the timer `clock.SystemClock` sleeps on
(see there for why). Loaded at the first sleep, so a process that only tells the time does
not load ctypes."""

from __future__ import annotations

import ctypes
import errno
import os


class _Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


class _Itimerspec(ctypes.Structure):
    _fields_ = [("it_interval", _Timespec), ("it_value", _Timespec)]


_CLOCK_REALTIME = 0
_TFD_NONBLOCK = os.O_NONBLOCK
_TFD_CLOEXEC = os.O_CLOEXEC
_TFD_TIMER_ABSTIME = 1
_TFD_TIMER_CANCEL_ON_SET = 2


class TimerFd:
    """An absolute CLOCK_REALTIME timer that also reports clock changes."""

    def __init__(self) -> None:
        self._libc = ctypes.CDLL(None, use_errno=True)
        fd = self._libc.timerfd_create(_CLOCK_REALTIME, _TFD_NONBLOCK | _TFD_CLOEXEC)
        if fd < 0:
            raise OSError(ctypes.get_errno(), "timerfd_create failed")
        self.fd: int = fd

    def arm(self, epoch: float) -> bool:
        """Arm the timer for `epoch`; True if the clock was set since it was last armed or
        read. The kernel then fails with ECANCELED, having armed it all the same
        (timerfd_create(2), NOTES), and the read will not say it: the caller must."""
        sec = int(epoch)
        nsec = max(1, int((epoch - sec) * 1e9))  # all zero would disarm
        spec = _Itimerspec(_Timespec(0, 0), _Timespec(sec, nsec))
        flags = _TFD_TIMER_ABSTIME | _TFD_TIMER_CANCEL_ON_SET
        if self._libc.timerfd_settime(self.fd, flags, ctypes.byref(spec), None) < 0:
            if ctypes.get_errno() == errno.ECANCELED:
                return True
            raise OSError(ctypes.get_errno(), "timerfd_settime failed")
        return False

    def disarm(self) -> None:
        spec = _Itimerspec(_Timespec(0, 0), _Timespec(0, 0))
        self._libc.timerfd_settime(self.fd, 0, ctypes.byref(spec), None)

    def drain(self) -> bool:
        """Read the expiry; True if the clock was set (ECANCELED) rather than reached."""
        try:
            os.read(self.fd, 8)
        except OSError as exc:
            return exc.errno == errno.ECANCELED
        return False

    def close(self) -> None:
        os.close(self.fd)
