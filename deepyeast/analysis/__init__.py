"""The paper's analyses; each reads the predictions table or features and writes a result folder."""
