"""The DIMSE edge (PS3.7, PS3.8): the archive reached by modalities and PACS over DICOM's own
protocol, beside the HTTP views and into the same archive: C-ECHO, C-STORE through STOW-RS's
ingest, C-FIND through QIDO-RS's search. pynetdicom carries the associations, PDUs and DIMSE
messages; nothing here speaks PDUs. No Flask: the listener runs in a process of its own
(``dicomweb dimse``), made from the same configuration as the app."""
