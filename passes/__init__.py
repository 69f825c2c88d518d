"""Graph passes over the joint forward+backward graph (installed as ``fp4compile.passes``)."""
