"""The index: the read model every page is rendered from, fed by storage and marks.

``model`` holds it, ``loading`` fills it at start, ``follow`` keeps each worker's
copy current (``follow_log`` when the files are remote: from the event log), ``live``
joins those as ``Index``, ``publishing`` adds an upload, ``examine`` reads one file's facts.
"""

from pypid.index.live import Index
from pypid.index.model import Progress
from pypid.index.publishing import Gate, Published, publish
from pypid.index.records import FileEntry, Marks

__all__ = ["FileEntry", "Gate", "Index", "Marks", "Progress", "Published", "publish"]
