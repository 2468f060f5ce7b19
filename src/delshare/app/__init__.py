"""The send/receive orchestration behind ``delshare send`` and ``delshare receive``.

Pair through the rendezvous (:mod:`delshare.pairing`), gather and exchange candidates, race the
paths (:mod:`delshare.link.race`), then move the files (:mod:`delshare.transfer`), reporting
:mod:`delshare.app.events` to whatever user interface is attached.
"""
