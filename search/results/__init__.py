"""What a study produces: exports, the retrained and tested model, predictions, reports and status."""
