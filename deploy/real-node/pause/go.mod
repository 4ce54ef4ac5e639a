module poiesis/pause

go 1.22
