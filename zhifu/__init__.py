"""zhifu (智付): a bank's payment platform in one Python package."""

__version__ = "0.1.0"
