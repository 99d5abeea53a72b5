"""captum_matex: MATEX explanations for medical vision-language models, as a Captum plugin."""

from captum_matex.forward import SimilarityForward
from captum_matex.matex import MATEX, MATEXDiagnostics

__version__ = "0.1.0"

__all__ = ["MATEX", "MATEXDiagnostics", "SimilarityForward", "__version__"]
