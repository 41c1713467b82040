"""Figures. Matplotlib with the Agg backend; plotting lives here, never in physics/ or recon/."""
