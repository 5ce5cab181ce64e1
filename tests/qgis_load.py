"""Load a QGIS project headless with QGIS's own Python bindings and print what QGIS made of it.

Run with the Python that has the ``qgis`` package (Debian: ``apt-get install python3-qgis``,
then ``/usr/bin/python3``), with ``QT_QPA_PLATFORM=offscreen``::

    QT_QPA_PLATFORM=offscreen /usr/bin/python3 tests/qgis_load.py out/coalmine.qgs

Prints one JSON object: the QGIS version, whether the project was read, every layer (name,
type, valid, source as QGIS resolved it, renderer type, temporal settings, feature count) and
every warning or error QGIS logged while reading. Used by tests/test_report_qgis.py; not part
of the package (it needs QGIS, which coalmine never does).
"""

from __future__ import annotations

import json
import sys


def main(path: str) -> int:
    from qgis.core import Qgis, QgsApplication, QgsMapLayerType, QgsProject

    QgsApplication.setPrefixPath("/usr", True)
    app = QgsApplication([], False)
    app.initQgis()
    messages: list[dict[str, str]] = []

    def logged(message: str, tag: str, level: int) -> None:
        if level >= Qgis.Warning:
            messages.append({"tag": tag, "level": int(level), "message": message})

    QgsApplication.messageLog().messageReceived.connect(logged)
    project = QgsProject.instance()
    ok = project.read(path)
    app.processEvents()
    layers = []
    for layer in project.mapLayers().values():
        # (layer.error() is not asked: in QGIS 3.22's bindings it crashes the interpreter)
        info = {"name": layer.name(), "id": layer.id(), "valid": layer.isValid(), "source": layer.source(),
                "crs": layer.crs().authid()}
        temporal = layer.temporalProperties()
        info["temporal"] = bool(temporal and temporal.isActive())
        if layer.type() == QgsMapLayerType.RasterLayer:
            info["type"] = "raster"
            ren = layer.renderer()
            info["renderer"] = ren.type() if ren else None
            if ren is not None and ren.type() == "paletted":
                info["classes"] = {str(c.value): [c.label, c.color.name(), c.color.alpha()] for c in ren.classes()}
            if info["temporal"]:
                r = temporal.fixedTemporalRange()
                info["range"] = [r.begin().toString("yyyy-MM-dd"), r.end().toString("yyyy-MM-dd")]
        else:
            info["type"] = "vector"
            info["renderer"] = layer.renderer().type() if layer.renderer() else None
            info["features"] = layer.featureCount()
            info["fields"] = [f.name() for f in layer.fields()]
            info["labels"] = bool(layer.labelsEnabled())
            if info["temporal"]:
                info["start_field"] = temporal.startField()
                info["end_field"] = temporal.endField()
                info["mode"] = int(temporal.mode())
        layers.append(info)
    tree = [n.name() for n in project.layerTreeRoot().children()]
    print(json.dumps({"qgis": Qgis.QGIS_VERSION, "read": bool(ok), "title": project.title(),
                      "crs": project.crs().authid(), "tree": tree, "layers": layers, "messages": messages}),
          flush=True)
    app.exitQgis()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
