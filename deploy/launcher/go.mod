module github.com/poiesis-tes/poiesis/launcher

go 1.21
